"""Loopback emulators of Microsoft Graph, the Gmail API and an OpenAI-compatible server."""
