"""One router per endpoint group; each only parses, calls one `Serving` method, returns."""
