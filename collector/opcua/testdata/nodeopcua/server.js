// An OPC UA server from node-opcua for collector/opcua's peer test. It
// registers the namespace urn:fieldgate:peer (index 2 on a node-opcua
// server; the test addresses it by URI) with one variable per type and
// prints "READY <port>" when it listens. Usage: node server.js [port]
const { OPCUAServer, DataType, Variant, StatusCodes } = require("node-opcua");

(async () => {
  const port = parseInt(process.argv[2] || "0", 10) || 26543;
  const server = new OPCUAServer({ port, allowAnonymous: true, buildInfo: { productName: "fieldgate-peer" } });
  await server.initialize();
  const ns = server.engine.addressSpace.registerNamespace("urn:fieldgate:peer");
  const dev = ns.addObject({ organizedBy: server.engine.addressSpace.rootFolder.objects, browseName: "Peer" });
  const vars = [
    ["Bool", DataType.Boolean, true],
    ["SByte", DataType.SByte, -5],
    ["Int16", DataType.Int16, -1234],
    ["UInt16", DataType.UInt16, 54321],
    ["Int32", DataType.Int32, -123456],
    ["UInt32", DataType.UInt32, 4000000000],
    ["Int64", DataType.Int64, [0xffffffff, 0xfffffffe]], // -2 as [high, low]
    ["UInt64", DataType.UInt64, [1, 0]],                 // 2^32
    ["Float", DataType.Float, 1.5],
    ["Double", DataType.Double, 3.25],
    ["String", DataType.String, "peer"],
    ["DateTime", DataType.DateTime, new Date(Date.UTC(2024, 0, 2, 3, 4, 5))],
    ["ByteString", DataType.ByteString, Buffer.from([1, 2, 255])],
    ["ArrayDouble", DataType.Double, [1, 2, 3]],
  ];
  for (const [name, dataType, value] of vars) {
    const isArray = name.startsWith("Array");
    ns.addVariable({
      componentOf: dev,
      browseName: name,
      nodeId: "s=" + name,
      dataType,
      valueRank: isArray ? 1 : -1,
      value: new Variant({ dataType, value: isArray ? Float64Array.from(value) : value, arrayType: isArray ? 1 : 0 }),
    });
  }
  let counter = 0;
  ns.addVariable({
    componentOf: dev, browseName: "Counter", nodeId: "s=Counter", dataType: DataType.UInt32,
    value: { get: () => new Variant({ dataType: DataType.UInt32, value: counter }) },
  });
  setInterval(() => { counter++; }, 50);
  await server.start();
  console.log("READY " + server.endpoints[0].port);
  process.on("SIGTERM", async () => { await server.shutdown(0); process.exit(0); });
})().catch((err) => { console.error(err); process.exit(1); });
