//! SMTP servers for the test world (owned by the SMTP work).
