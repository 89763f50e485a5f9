"""The classic hello-world app, as a Tornado user writes it (with squall's imports).

    python examples/hello/app.py [--port=8888] [--address=127.0.0.1]

then open http://127.0.0.1:8888/ ; stop it with Ctrl-C.
"""

import squall.ioloop
import squall.web
from squall.options import define, options

define("port", default=8888, help="run on the given port", type=int)
define("address", default="127.0.0.1", help="listen on this address")


class MainHandler(squall.web.RequestHandler):
    def get(self):
        self.write("Hello, world")


def make_app():
    return squall.web.Application([(r"/", MainHandler)])


def main():
    squall.options.parse_command_line()
    app = make_app()
    app.listen(options.port, options.address)
    print("listening on http://%s:%d/" % (options.address, options.port), flush=True)
    try:
        squall.ioloop.IOLoop.current().start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
