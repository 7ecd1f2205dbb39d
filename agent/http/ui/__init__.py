"""Static assets of the built-in web UI (HTML, JavaScript, CSS), served by ``agent.http.ui_endpoint``."""
