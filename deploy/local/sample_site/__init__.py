"""The bundled sample site (Acme Cloud Drive's help centre) and its local server, for tests, bench and the demo."""
