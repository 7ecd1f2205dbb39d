"""DNS interface (``docs/discovery/dns.mdx``): a pure resolver, an answer cache that encodes once per
change, and the asyncio UDP/TCP server the agent starts.

    from agent.dns import DNSServer
    dns = DNSServer(store, config, node_address=config.advertise)
    await dns.start()
    await dns.close()
"""

from .resolver import Answer, Resolver
from .responder import Responder
from .server import DNSServer

__all__ = ["DNSServer", "Resolver", "Responder", "Answer"]
