//! Facts about a domain → its verdict (SPEC §1). (Being written.)
