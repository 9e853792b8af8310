//! The JSON shape of a verdict. (Being written.)
