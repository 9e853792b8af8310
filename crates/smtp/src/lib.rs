//! SMTP client dialogues: the STARTTLS probe (RFC 5321, RFC 3207)
