//! Table-driven tests of the JEXL subset (written next).
