#!/usr/bin/env python3
"""Serves git repositories over HTTPS on 127.0.0.1 through Debian's git-http-backend (CGI),
for the source tests: TLS with the given certificate, HTTP basic auth with one user and token
(anything else is 401), and a log of every request line and whether it was let in.

    git_https.py PORT_FILE ROOT CERT KEY USER TOKEN LOG

Binds a free port and writes it to PORT_FILE once it listens.
"""
import base64
import http.server
import os
import shutil
import ssl
import sys
import tempfile

port_file, root, cert, key, user, token, log = sys.argv[1:8]
expected = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()

# CGIHTTPRequestHandler runs scripts from a cgi-bin dir: put git-http-backend in one.
cgi_root = tempfile.mkdtemp(prefix="git-https-cgi-")
os.makedirs(os.path.join(cgi_root, "cgi-bin"))
shutil.copy("/usr/lib/git-core/git-http-backend", os.path.join(cgi_root, "cgi-bin", "git"))
os.environ["GIT_PROJECT_ROOT"] = root
os.environ["GIT_HTTP_EXPORT_ALL"] = "1"
os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
os.environ["GIT_CONFIG_GLOBAL"] = "/dev/null"


class Handler(http.server.CGIHTTPRequestHandler):
    cgi_directories = ["/cgi-bin"]
    # Run the CGI with subprocess, as the server's own user (the forking path would switch to
    # nobody, who cannot read the test's private dirs).
    have_fork = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=cgi_root, **kwargs)

    def allowed(self):
        ok = self.headers.get("Authorization") == expected
        with open(log, "a") as f:
            f.write(f"{'ok' if ok else 'denied'} {self.command} {self.path}\n")
        if not ok:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="fleet"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        return ok

    def do_GET(self):
        if self.allowed():
            self.path = "/cgi-bin/git" + self.path
            super().do_GET()

    def do_POST(self):
        if self.allowed():
            self.path = "/cgi-bin/git" + self.path
            super().do_POST()

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    def shutdown_request(self, request):
        # End TLS with close_notify: responses without a length end at the close, and curl
        # (GnuTLS) takes a bare TCP close for a truncated response.
        try:
            request.unwrap()
        except (OSError, ValueError):
            pass
        super().shutdown_request(request)


server = Server(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
