"""Drives sluice's MCP endpoint with the official MCP Python SDK (PyPI `mcp`), for tests/mcp*.rs.

Usage: client.py COMMAND URL TOKEN  (a JSON plan on standard input; one JSON answer on standard
output). Nothing here interprets sluice's answers beyond turning the SDK's objects into JSON: the
Rust tests decide what is right.

Commands:
  session  connect (the SDK's default negotiation), initialize, list tools and resources, then
           run the plan's calls ({"tool": name, "args": {...}}) and resource reads
           ({"read": uri}) in order
  cancel   start the plan's one call and abandon it after plan["after_s"] seconds: the SDK
           sends `notifications/cancelled`; then print and wait plan["linger_s"] seconds with
           the connection open, so the test can look at the database meanwhile
  hang     start the plan's one call, print "started", and wait to be killed (a dropped
           connection)
"""

import json
import sys

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError


def dump(obj):
    if obj is None:
        return None
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    return obj


def result_json(result):
    return {
        "is_error": bool(result.is_error),
        "structured": result.structured_content,
        "text": [c.text for c in result.content if getattr(c, "type", "") == "text"],
    }


def client(url, token):
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    return Client(streamable_http_client(url, http_client=http))


async def session(url, token, plan):
    out = {"calls": [], "reads": []}
    async with client(url, token) as c:
        out["protocol_version"] = c.protocol_version
        out["server_info"] = dump(c.server_info)
        out["instructions"] = c.instructions
        out["capabilities"] = dump(c.server_capabilities)
        out["tools"] = [dump(t) for t in (await c.list_tools()).tools]
        out["resources"] = [dump(r) for r in (await c.list_resources()).resources]
        for step in plan.get("steps", []):
            try:
                if "tool" in step:
                    r = await c.call_tool(step["tool"], step.get("args", {}))
                    out["calls"].append(result_json(r))
                else:
                    r = await c.read_resource(step["read"])
                    out["reads"].append([dump(x) for x in r.contents])
            except MCPError as e:
                # A protocol error (not a tool result): recorded where the answer would be.
                err = {"protocol_error": {"code": e.error.code, "message": e.error.message}}
                out["calls" if "tool" in step else "reads"].append(err)
    return out


async def cancel(url, token, plan):
    async with client(url, token) as c:
        started = anyio.current_time()
        with anyio.move_on_after(plan["after_s"]) as scope:
            await c.call_tool(plan["tool"], plan["args"])
        print(json.dumps({"cancelled": scope.cancelled_caught,
                          "after_s": anyio.current_time() - started}), flush=True)
        await anyio.sleep(plan.get("linger_s", 0))


async def hang(url, token, plan):
    async with client(url, token) as c:
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.call_tool, plan["tool"], plan["args"])
            await anyio.sleep(0.2)
            print("started", flush=True)
            await anyio.sleep(3600)


def main():
    command, url, token = sys.argv[1:4]
    plan = json.load(sys.stdin)
    if command == "session":
        print(json.dumps(anyio.run(session, url, token, plan)))
    elif command == "cancel":
        anyio.run(cancel, url, token, plan)
    elif command == "hang":
        anyio.run(hang, url, token, plan)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
