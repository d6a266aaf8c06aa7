"""One module per mail provider, each implementing `mailtriage.core.ports.Mailbox`."""
