from typing import Any, Sequence

import numpy as np

ALIGNMENT: int

def aligned_empty(shape: Sequence[int], dtype: Any, zero: bool = ...) -> np.ndarray: ...
