"""The staff web application: aiohttp app factory, sessions, CSRF and server-rendered pages."""
