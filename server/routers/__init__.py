"""One router per endpoint group; each only parses, calls the service, and returns."""
