#!/usr/bin/env python3
"""A pyftpdlib FTP server for the namespace tests and the demo.

  ftp-pyftpd.py ROOT --bind ADDR --port N --user NAME --password PW --pasv LO-HI [--log FILE] [--deny CMDS]

Serves ROOT to one user with full permissions (list, download, upload, delete). pyftpdlib's defaults
`permit_foreign_addresses = False` and `permit_privileged_ports = False` are set explicitly: a PORT/EPRT
naming an address other than the control connection's peer, or a port below 1024, is refused, and so is a
passive data connection from another address -- the strict check a NAT's FTP ALG has to pass.
Every PASV/EPSV/PORT/EPRT/AUTH/CCC/NOOP/ALGS/LPRT/LPSV is logged as "received CMD ARG", as the server saw
it. --deny EPSV,EPRT makes a server that does not implement those (502, logged "denied CMD ARG"): one
that only knows PASV and PORT. Prints "ready" (flushed) once listening.
"""
import argparse
import logging
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, default=21)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--pasv", required=True, help="passive port range LO-HI")
    p.add_argument("--log", help="log file (default: stderr)")
    p.add_argument("--deny", default="", help="commands answered 502, comma separated (e.g. EPSV,EPRT)")
    a = p.parse_args()
    lo, hi = (int(x) for x in a.pasv.split("-"))

    logging.basicConfig(filename=a.log, level=logging.INFO, format="%(asctime)s %(message)s")
    auth = DummyAuthorizer()
    auth.add_user(a.user, a.password, a.root, perm="elradfmwMT")

    denied = {c.strip().upper() for c in a.deny.split(",") if c.strip()}

    class Handler(FTPHandler):
        def pre_process_command(self, line, cmd, arg):
            # pyftpdlib's own log shows EPRT as "PORT ip:port": log the data-connection commands as received.
            if cmd in ("PASV", "EPSV", "PORT", "EPRT", "AUTH", "CCC", "NOOP", "ALGS", "LPRT", "LPSV"):
                logging.info("%s:%s received %s %s", self.remote_ip, self.remote_port, cmd, arg or "")
            if cmd in denied:
                logging.info("%s:%s denied %s %s", self.remote_ip, self.remote_port, cmd, arg or "")
                self.respond("502 Command not implemented.")
                return
            return super().pre_process_command(line, cmd, arg)

    Handler.authorizer = auth
    Handler.passive_ports = range(lo, hi + 1)
    Handler.permit_foreign_addresses = False
    Handler.permit_privileged_ports = False
    Handler.timeout = 120
    Handler.banner = "pyftpdlib ready"
    Handler.log_cmds_list = ["RETR", "STOR"]
    Handler.dtp_handler.timeout = 60
    Handler.dtp_handler.ac_in_buffer_size = 1 << 18
    Handler.dtp_handler.ac_out_buffer_size = 1 << 18

    server = FTPServer((a.bind, a.port), Handler)
    server.max_cons = 64
    print("ready", flush=True)
    server.serve_forever(handle_exit=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
