// Decodes Sparkplug B payloads with Eclipse Tahu's sparkplug-payload.
// stdin: one "topic<TAB>hex" per line; stdout: one JSON object per line.
const sp = require("sparkplug-payload").get("spBv1.0");
const lines = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean);
for (const line of lines) {
  const [topic, hex] = line.split("\t");
  const p = sp.decodePayload(Buffer.from(hex, "hex"));
  console.log(JSON.stringify({ topic, payload: p }, (k, v) =>
    typeof v === "bigint" ? Number(v) : (v && v.low !== undefined && v.high !== undefined ? Number(BigInt.asUintN(64, (BigInt(v.high >>> 0) << 32n) | BigInt(v.low >>> 0))) : v)));
}
