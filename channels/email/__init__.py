"""The e-mail support inbox channel: IMAP or SMTP in, SMTP out."""
