// Verifies waotp's X-Waotp-Signature on a callback or hook call (Node.js, no dependencies).
//
//     X-Waotp-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">
//
// keyed with WAOTP_CALLBACK_SECRET. Check the raw body bytes (e.g. express.raw()), before
// parsing any JSON, and refuse a timestamp more than five minutes from your clock: a recorded
// call cannot be replayed later.
//
// As a module: verifyCallback(secret, header, body) throws or returns.
// As a script (used by waotp's tests):
//     WAOTP_CALLBACK_SECRET=... node verify_callback.js '<header>' < body
// exits 0 when the call is genuine, 1 (with the reason on stderr) when it is not.
"use strict";
const crypto = require("crypto");

const TOLERANCE_SECONDS = 300;

function verifyCallback(secret, header, body, nowSeconds = Date.now() / 1000) {
  if (!header) throw new Error("no signature");
  let timestamp = null;
  const macs = [];
  for (const part of header.split(",")) {
    const [key, value] = part.trim().split("=", 2);
    if (key === "t") timestamp = value;
    else if (key === "v1") macs.push(value);
  }
  if (timestamp === null || !/^\d+$/.test(timestamp) || macs.length === 0) {
    throw new Error("malformed signature header");
  }
  if (Math.abs(nowSeconds - Number(timestamp)) > TOLERANCE_SECONDS) {
    throw new Error("timestamp too old (or too far in the future)");
  }
  const expected = crypto
    .createHmac("sha256", secret)
    .update(timestamp + ".")
    .update(body)
    .digest();
  // timingSafeEqual takes the same time wherever the buffers differ (and needs equal lengths).
  const matches = macs.some((mac) => {
    const given = Buffer.from(mac, "hex");
    return given.length === expected.length && crypto.timingSafeEqual(given, expected);
  });
  if (!matches) throw new Error("signature does not match the body");
}

module.exports = { verifyCallback, TOLERANCE_SECONDS };

if (require.main === module) {
  const chunks = [];
  process.stdin.on("data", (c) => chunks.push(c));
  process.stdin.on("end", () => {
    try {
      verifyCallback(process.env.WAOTP_CALLBACK_SECRET, process.argv[2], Buffer.concat(chunks));
    } catch (refused) {
      console.error(`refused: ${refused.message}`);
      process.exit(1);
    }
  });
}
