"""An order service whose ``POST /orders`` is safe to retry.

Placing an order takes a while (``--work`` seconds: think payment and
stock). A client that times out and posts again with the same
``Idempotency-Key`` does not place a second order: it waits for the first
attempt, or gets its answer replayed (marked ``Idempotent-Replayed: true``).
``GET /orders`` lists what was really placed.

    python examples/idempotent_service/app.py [--port=8892] [--store=redis://127.0.0.1:6379/0]

    curl -i -X POST -H 'Idempotency-Key: order-42' -d item=book http://127.0.0.1:8892/orders
    curl -i -X POST -H 'Idempotency-Key: order-42' -d item=book http://127.0.0.1:8892/orders
    curl http://127.0.0.1:8892/orders

Run two of them on different ports with the same ``--store=redis://...`` and
a retry sent to the other one is recognised too.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

import squall.options
import squall.web
from squall.idempotency import IdempotencyStore, idempotent, store_from_url
from squall.options import define, options


class OrdersHandler(squall.web.RequestHandler):
    def initialize(self, orders: list[dict[str, Any]], work: float) -> None:  # type: ignore[override]
        self.orders = orders
        self.work = work

    def get(self) -> None:
        self.write({"orders": self.orders})

    @idempotent(required=True)
    async def post(self) -> None:
        item = self.get_argument("item")
        await asyncio.sleep(self.work)
        order = {"id": len(self.orders) + 1, "item": item}
        self.orders.append(order)
        self.set_status(201)
        self.set_header("Location", "/orders/%d" % order["id"])
        self.write(order)


def make_app(
    store: Optional[IdempotencyStore] = None,
    orders: Optional[list[dict[str, Any]]] = None,
    work: float = 1.0,
) -> squall.web.Application:
    """The application; ``store`` holds the idempotency records (default:
    this process's memory), ``orders`` the placed orders."""
    return squall.web.Application(
        [(r"/orders", OrdersHandler, {"orders": [] if orders is None else orders, "work": work})],
        idempotency_store=store,
    )


async def main() -> None:
    define("port", default=8892, help="run on the given port", type=int)
    define("address", default="127.0.0.1", help="listen on this address")
    define("store", default="memory://", help="idempotency records: memory:// or redis://host:port/db")
    define("work", default=1.0, help="seconds it takes to place an order", type=float)
    squall.options.parse_command_line()
    store = store_from_url(options.store)  # a malformed URL fails here...
    await store.check()  # ... and an unreachable Redis here, not at the first order
    make_app(store, work=options.work).listen(options.port, options.address)
    print("orders on http://%s:%d/orders (records in %s)" % (options.address, options.port, options.store), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await store.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
