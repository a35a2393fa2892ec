#!/usr/bin/python3
"""A Modbus RTU slave on a serial line for fieldgate's independent peer test.

Usage: /usr/bin/python3 pymodbus_rtu_server.py TTY BAUD [ascii]

Serves unit 1 with the values of pymodbus_server.py (every type in every
byte order) and unit 2 with holding registers 0..9 set to 200..209, on the
serial line TTY (one end of a socat pty pair) with ModbusRtuFramer, 8N1 (pyserial cannot set even parity on a pty here).
Other unit ids get no answer. With "ascii" it speaks Modbus ASCII
(ModbusAsciiFramer, 8N1) instead. Prints "manifest <json>", then "ready TTY",
and serves until killed.
"""
import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pymodbus.datastore import (  # noqa: E402
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
)
from pymodbus.framer.ascii_framer import ModbusAsciiFramer  # noqa: E402
from pymodbus.framer.rtu_framer import ModbusRtuFramer  # noqa: E402
from pymodbus.server import StartAsyncSerialServer  # noqa: E402

from pymodbus_server import build  # noqa: E402


def slave(tables):
    return ModbusSlaveContext(
        di=ModbusSequentialDataBlock(0, tables["discrete"]),
        co=ModbusSequentialDataBlock(0, tables["coil"]),
        hr=ModbusSequentialDataBlock(0, tables["holding"]),
        ir=ModbusSequentialDataBlock(0, tables["input"]),
        zero_mode=True,
    )


async def main(tty, baud, framer):
    tables, manifest = build()
    second = {"holding": list(range(200, 210)) + [0] * 90, "input": [0] * 100,
              "coil": [False] * 100, "discrete": [False] * 100}
    context = ModbusServerContext(slaves={1: slave(tables), 2: slave(second)}, single=False)
    print("manifest " + json.dumps(manifest), flush=True)
    server = StartAsyncSerialServer(context=context, framer=framer, port=tty,
                                    baudrate=baud, bytesize=8, parity="N", stopbits=1,
                                    ignore_missing_slaves=True, defer_start=True)
    server = await server
    await server.start()  # opens the port
    task = asyncio.create_task(server.serve_forever())
    print(f"ready {tty}", flush=True)
    await task


if __name__ == "__main__":
    ascii_mode = len(sys.argv) > 3 and sys.argv[3] == "ascii"
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), ModbusAsciiFramer if ascii_mode else ModbusRtuFramer))
