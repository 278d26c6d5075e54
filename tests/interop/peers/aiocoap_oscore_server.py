#!/usr/bin/env python3
"""aiocoap's OSCORE server for the benchmarks: one resource, POST /telemetry
answered 2.04, behind aiocoap's OSCORE site wrapper with one provisioned
security context per device (FilesystemSecurityContext directories).

    aiocoap_oscore_server.py PORT CONTEXT_DIR...
"""
import asyncio
import sys
import warnings

warnings.simplefilter("ignore", DeprecationWarning)

import aiocoap
import aiocoap.resource as resource
from aiocoap.credentials import CredentialsMap
from aiocoap.oscore import FilesystemSecurityContext
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper


class Telemetry(resource.Resource):
    async def render_post(self, request):
        return aiocoap.Message(code=aiocoap.CHANGED)


async def main():
    port, context_dirs = int(sys.argv[1]), sys.argv[2:]
    site = resource.Site()
    site.add_resource(["telemetry"], Telemetry())
    credentials = CredentialsMap()
    for i, d in enumerate(context_dirs):
        credentials[":device%d" % i] = FilesystemSecurityContext(d)
    wrapped = OscoreSiteWrapper(site, credentials)
    await aiocoap.Context.create_server_context(wrapped, bind=("127.0.0.1", port))
    print("ready", flush=True)
    await asyncio.get_running_loop().create_future()


asyncio.run(main())
