"""mailtriage: route a shared mailbox's mail to departments, natively in the mail provider."""

__version__ = "0.1.0"
