"""File formats: readers (strict by default, ``permissive=True`` opt-in) and atomic writers."""
