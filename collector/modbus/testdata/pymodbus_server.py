#!/usr/bin/python3
"""A Modbus TCP slave for fieldgate's independent peer test.

Usage: /usr/bin/python3 pymodbus_server.py PORT   (0 picks a free port)

Needs Debian's python3-pymodbus (3.0). Listens on 127.0.0.1, fills holding
and input registers, coils and discrete inputs with known values of every
type in every byte order (encoded here with Python's struct module,
independently of fieldgate's Go code), prints one line
"manifest <json>" describing each value, then "ready <port>", and serves
until killed.
"""
import asyncio
import json
import struct
import sys

from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
)
from pymodbus.server import StartAsyncTcpServer

TYPES = [
    ("int16", ">h", -12345),
    ("uint16", ">H", 54321),
    ("int32", ">i", -123456789),
    ("uint32", ">I", 3000000000),
    ("int64", ">q", -1234567890123456789),
    ("uint64", ">Q", 18000000000000000000),
    ("float32", ">f", 123.456),
    ("float64", ">d", -98765.4321),
]


def reorder(big_endian, order):
    """Rearranges big-endian bytes into a byte/word order."""
    words = [big_endian[i:i + 2] for i in range(0, len(big_endian), 2)]
    if order == "ABCD":
        return big_endian
    if order == "BADC":
        return b"".join(w[::-1] for w in words)
    if order == "CDAB":
        return b"".join(words[::-1])
    if order == "DCBA":
        return big_endian[::-1]
    raise ValueError(order)


def registers(raw):
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def expected(fmt, value):
    """The value as the device holds it (float32 rounds), as text."""
    decoded = struct.unpack(fmt, struct.pack(fmt, value))[0]
    return repr(decoded) if isinstance(decoded, float) else str(decoded)


def build():
    tables = {"holding": [0] * 1000, "input": [0] * 1000, "coil": [False] * 100, "discrete": [False] * 100}
    manifest = []
    for table in ("holding", "input"):
        offset = 0
        for name, fmt, value in TYPES:
            for order in ("ABCD", "CDAB", "BADC", "DCBA"):
                regs = registers(reorder(struct.pack(fmt, value), order))
                tables[table][offset:offset + len(regs)] = regs
                manifest.append({"name": f"{table}_{name}_{order}", "table": table, "offset": offset,
                                 "type": name, "order": order, "want": expected(fmt, value)})
                offset += len(regs)
    # Strings: 2 characters per register, high byte first, NUL padded.
    text = b"PN-4711".ljust(10, b"\0")
    tables["holding"][500:505] = registers(text)
    manifest.append({"name": "recipe", "table": "holding", "offset": 500, "type": "string", "length": 5, "want": "PN-4711"})
    # Bits of one register: bits 0, 5 and 13 set.
    tables["holding"][510] = (1 << 0) | (1 << 5) | (1 << 13)
    for b in (0, 1, 5, 13, 15):
        manifest.append({"name": f"status_bit{b}", "table": "holding", "offset": 510, "type": "bool", "bit": b,
                         "want": "true" if b in (0, 5, 13) else "false"})
    # Scaled: raw 650 * 0.1 - 40 = 25.0
    tables["holding"][511] = 650
    manifest.append({"name": "scaled", "table": "holding", "offset": 511, "type": "uint16", "scale": 0.1,
                     "value_offset": -40.0, "want": repr(650 * 0.1 - 40.0)})
    for i, on in enumerate([True, False, True, True, False, False, False, False, True]):
        tables["coil"][7 + i] = on
        manifest.append({"name": f"coil{7 + i}", "table": "coil", "offset": 7 + i, "type": "bool", "want": str(on).lower()})
    for i, on in enumerate([False, True, True]):
        tables["discrete"][40 + i] = on
        manifest.append({"name": f"di{40 + i}", "table": "discrete", "offset": 40 + i, "type": "bool", "want": str(on).lower()})
    return tables, manifest


async def main(port):
    tables, manifest = build()
    slave = ModbusSlaveContext(
        di=ModbusSequentialDataBlock(0, tables["discrete"]),
        co=ModbusSequentialDataBlock(0, tables["coil"]),
        hr=ModbusSequentialDataBlock(0, tables["holding"]),
        ir=ModbusSequentialDataBlock(0, tables["input"]),
        zero_mode=True,
    )
    context = ModbusServerContext(slaves=slave, single=True)
    server = await StartAsyncTcpServer(context=context, address=("127.0.0.1", port), defer_start=True)
    task = asyncio.create_task(server.serve_forever())
    await server.serving
    bound = server.server.sockets[0].getsockname()[1]
    print("manifest " + json.dumps(manifest), flush=True)
    print(f"ready {bound}", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
