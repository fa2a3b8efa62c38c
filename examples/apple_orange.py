"""The textbook's shopping example as a computational graph of Mul/Add nodes.

2 apples at 100 and 3 oranges at 150, with 1.1 tax: forward gives the price
(715), backward gives how much it moves per unit of each input.  Run:
``python examples/apple_orange.py``.
"""

from fastconv.layers import Add, Mul


def main():
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple, mul_orange, add_fruit, mul_tax = Mul(), Mul(), Add(), Mul()

    # forward
    apple_price = mul_apple.forward(apple, apple_num)           # 200
    orange_price = mul_orange.forward(orange, orange_num)       # 450
    all_price = add_fruit.forward(apple_price, orange_price)    # 650
    price = mul_tax.forward(all_price, tax)                     # 715

    # backward
    dall_price, dtax = mul_tax.backward(1)
    dapple_price, dorange_price = add_fruit.backward(dall_price)
    dorange, dorange_num = mul_orange.backward(dorange_price)
    dapple, dapple_num = mul_apple.backward(dapple_price)

    print(f"price {price:.0f}")
    print(f"d apple {dapple:.1f}, d apple count {dapple_num:.0f}, d orange {dorange:.1f}, "
          f"d orange count {dorange_num:.0f}, d tax {dtax:.0f}")
    return price, dapple, dapple_num, dorange, dorange_num, dtax


if __name__ == "__main__":
    main()
