// An OPC UA server from node-opcua for collector/opcua's peer tests. It
// registers the namespace urn:fieldgate:peer (index 2 on a node-opcua
// server; the tests address it by URI) with one variable per type and
// prints "READY <port>" when it listens.
//
// Usage: node server.js [port] [pki folder]
//
// With a pki folder it also offers every security policy and mode
// (Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss with Sign
// and SignAndEncrypt), keeps its own certificate and its trust lists in
// that folder, accepts unknown client certificates (application and user
// certificates alike: automaticallyAcceptUnknownCertificate, so the tests
// need not trust the gateway's generated certificate by hand), and takes
// the user line3 with password s3cret. Its certificate is then
// <pki>/server/own/certs/certificate.pem.
//
// Commands on stdin, one a line, each answered with one line on stdout:
//   kill-sessions         close every session server-side (subscriptions kept)  -> "OK kill-sessions <n>"
//   delete-subscriptions  delete every subscription server-side                 -> "OK delete-subscriptions <n>"
//   stats                 -> "STATS sessions=<n> subscriptions=<n> items=<n> filtered=<n>"
//                            (filtered: monitored items with a deadband filter)
const path = require("path");
const readline = require("readline");
const {
  OPCUAServer, OPCUACertificateManager, DataType, Variant, SecurityPolicy, MessageSecurityMode,
} = require("node-opcua");

(async () => {
  const port = parseInt(process.argv[2] || "0", 10) || 26543;
  const pki = process.argv[3];
  const options = { port, allowAnonymous: true, buildInfo: { productName: "fieldgate-peer" } };
  if (pki) {
    Object.assign(options, {
      securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256, SecurityPolicy.Aes128_Sha256_RsaOaep, SecurityPolicy.Aes256_Sha256_RsaPss],
      securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
      serverCertificateManager: new OPCUACertificateManager({ rootFolder: path.join(pki, "server"), automaticallyAcceptUnknownCertificate: true }),
      userCertificateManager: new OPCUACertificateManager({ rootFolder: path.join(pki, "user"), automaticallyAcceptUnknownCertificate: true }),
      userManager: { isValidUser: (user, password) => user === "line3" && password === "s3cret" },
    });
  }
  const server = new OPCUAServer(options);
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
    // Writable by clients (the others are too, but tests leave them alone).
    ["SetInt16", DataType.Int16, 0],
    ["SetByte", DataType.Byte, 0],
    ["SetUInt32", DataType.UInt32, 0],
    ["SetFloat", DataType.Float, 0],
    ["SetDouble", DataType.Double, 0],
    ["SetBool", DataType.Boolean, false],
    ["SetString", DataType.String, ""],
    ["SetInt64", DataType.Int64, [0, 0]],
  ];
  for (const [name, dataType, value] of vars) {
    const isArray = name.startsWith("Array");
    ns.addVariable({
      componentOf: dev,
      browseName: name,
      nodeId: "s=" + name,
      dataType,
      valueRank: isArray ? 1 : -1,
      accessLevel: "CurrentRead | CurrentWrite",
      userAccessLevel: "CurrentRead | CurrentWrite",
      value: new Variant({ dataType, value: isArray ? Float64Array.from(value) : value, arrayType: isArray ? 1 : 0 }),
    });
  }
  ns.addVariable({
    componentOf: dev, browseName: "ReadOnly", nodeId: "s=ReadOnly", dataType: DataType.Int32,
    accessLevel: "CurrentRead", userAccessLevel: "CurrentRead",
    value: new Variant({ dataType: DataType.Int32, value: 7 }),
  });
  let counter = 0;
  ns.addVariable({
    componentOf: dev, browseName: "Counter", nodeId: "s=Counter", dataType: DataType.UInt32, minimumSamplingInterval: 10,
    value: { get: () => new Variant({ dataType: DataType.UInt32, value: counter }) },
  });
  setInterval(() => { counter++; }, 50);
  // Wave rises by 0.25 every 50 ms from 0 to 10 and starts over: a
  // deadband of 1 lets about one change in four through.
  let wave = 0;
  ns.addVariable({
    componentOf: dev, browseName: "Wave", nodeId: "s=Wave", dataType: DataType.Double, minimumSamplingInterval: 10,
    value: { get: () => new Variant({ dataType: DataType.Double, value: wave }) },
  });
  setInterval(() => { wave = wave >= 10 ? 0 : wave + 0.25; }, 50);
  await server.start();
  console.log("READY " + server.endpoints[0].port);

  const subscriptions = () => server.engine.getSessions().flatMap((s) => s.publishEngine ? s.publishEngine.subscriptions : []);
  readline.createInterface({ input: process.stdin }).on("line", (line) => {
    const cmd = line.trim();
    if (cmd === "kill-sessions") {
      const sessions = server.engine.getSessions();
      for (const s of sessions) server.engine.closeSession(s.authenticationToken, false, "Terminated");
      console.log("OK kill-sessions " + sessions.length);
    } else if (cmd === "delete-subscriptions") {
      let n = 0;
      for (const s of server.engine.getSessions()) {
        for (const sub of [...(s.publishEngine ? s.publishEngine.subscriptions : [])]) {
          if (s.deleteSubscription(sub.id).isGood()) n++;
        }
      }
      console.log("OK delete-subscriptions " + n);
    } else if (cmd === "stats") {
      const subs = subscriptions();
      let items = 0, filtered = 0;
      for (const sub of subs) {
        for (const item of sub.monitoredItems.values()) {
          items++;
          if (item.filter && item.filter.deadbandType) filtered++;
        }
      }
      console.log(`STATS sessions=${server.engine.getSessions().length} subscriptions=${subs.length} items=${items} filtered=${filtered}`);
    } else if (cmd !== "") {
      console.log("ERR unknown command " + cmd);
    }
  });
  process.on("SIGTERM", async () => { await server.shutdown(0); process.exit(0); });
})().catch((err) => { console.error(err); process.exit(1); });
