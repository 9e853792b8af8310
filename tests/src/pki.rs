//! Test certificates (owned by the SMTP work).
