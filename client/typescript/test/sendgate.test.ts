// The client against the REAL sendgate server (built from ./cmd/sendgate, or
// SENDGATE_BIN), started with a memory store and a tiny config.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  Classification,
  Code,
  ConnectError,
  DeferReason,
  ReputationState,
  Verdict,
  createSendgateClient,
  isInvalidArgument,
  type SendgateClient,
} from "../src/index.js";
import { startSendgate, type RunningServer } from "./server.js";

// Plain token buckets (burst 0, no pacing): the tests take bursts.
const CONFIG = `machine: {burst: 0}
providers:
  tencent:
    domains: [qq.com, foxmail.com]
    tiers: {minute: 3, hour: 100}
default:
  tiers: {minute: 60, hour: 2000, day: 20000}
`;

// Every test uses its own sender IP (documentation range), so the keys of one
// test never touch another's buckets in the shared server.
let nextIp = 10;
const freshIp = () => `192.0.2.${nextIp++}`;

// The configured tencent tiers. The built-in policy may add others (the file
// overrides and extends it), so only these two are checked.
function assertTencentTiers(tiers: { name: string; limit: number }[]) {
  const limits = Object.fromEntries(tiers.map((t) => [t.name, t.limit]));
  assert.equal(limits.minute, 3, `tiers ${JSON.stringify(tiers)}`);
  assert.equal(limits.hour, 100, `tiers ${JSON.stringify(tiers)}`);
}

function expectInvalidArgument(field: string) {
  return (err: unknown) => {
    assert.ok(err instanceof ConnectError, `not a ConnectError: ${err}`);
    assert.equal(err.code, Code.InvalidArgument, err.message);
    assert.ok(isInvalidArgument(err));
    assert.ok(err.rawMessage.includes(field), `message ${JSON.stringify(err.rawMessage)} does not name ${field}`);
    return true;
  };
}

describe("SendgateClient against the real server", { timeout: 15 * 60 * 1000 }, () => {
  let server: RunningServer;
  let client: SendgateClient;

  before(async () => {
    server = await startSendgate(CONFIG);
    // Generous deadline: the first call also opens the HTTP/2 connection.
    client = createSendgateClient({ baseUrl: server.baseUrl, timeoutMs: 5000 });
  });

  after(async () => {
    client?.close();
    await server?.stop();
  });

  it("CanSend allows qq.com as provider tencent, with its tiers", async () => {
    const res = await client.canSend({ senderIp: freshIp(), recipientDomain: "qq.com" });
    assert.equal(res.verdict, Verdict.ALLOW, res.detail);
    assert.equal(res.allowed, true);
    assert.equal(res.reason, DeferReason.UNSPECIFIED);
    assert.equal(res.retryAfterMs, 0);
    assert.equal(res.provider, "tencent");
    assert.equal(res.state, ReputationState.HEALTHY);
    assertTencentTiers(res.tiers);
    const minute = res.tiers.find((t) => t.name === "minute")!;
    assert.equal(minute.remaining, 2);
    assert.equal(minute.windowMs, 60_000);
  });

  it("a whole address resolves like its domain", async () => {
    const res = await client.canSend({ senderIp: freshIp(), recipientDomain: "someone@FoxMail.com", dryRun: true });
    assert.equal(res.verdict, Verdict.ALLOW, res.detail);
    assert.equal(res.provider, "tencent");
  });

  it("an exhausted minute tier defers with RATE_LIMITED and retryAfterMs > 0", async () => {
    const ip = freshIp();
    for (let i = 0; i < 3; i++) {
      const ok = await client.canSend({ senderIp: ip, recipientDomain: "qq.com" });
      assert.equal(ok.verdict, Verdict.ALLOW, `send ${i + 1}: ${ok.detail}`);
    }
    const res = await client.canSend({ senderIp: ip, recipientDomain: "qq.com" });
    assert.equal(res.verdict, Verdict.DEFER);
    assert.equal(res.allowed, false);
    assert.equal(res.reason, DeferReason.RATE_LIMITED);
    assert.ok(res.retryAfterMs > 0, `retryAfterMs ${res.retryAfterMs}`);
    assert.ok(res.retryAfterMs <= 60_000, `retryAfterMs ${res.retryAfterMs}`);
    assert.equal(res.provider, "tencent");
    assert.ok(res.tiers.length > 0, "a DEFER carries the tiers");
    assert.equal(res.tiers.find((t) => t.name === "minute")!.remaining, 0);
  });

  it("count is taken all at once, and more than a tier holds is INVALID_ARGUMENT", async () => {
    const ip = freshIp();
    const two = await client.canSend({ senderIp: ip, recipientDomain: "qq.com", count: 2 });
    assert.equal(two.verdict, Verdict.ALLOW, two.detail);
    assert.equal(two.tiers.find((t) => t.name === "minute")!.remaining, 1);
    const again = await client.canSend({ senderIp: ip, recipientDomain: "qq.com", count: 2 });
    assert.equal(again.verdict, Verdict.DEFER);
    await assert.rejects(
      client.canSend({ senderIp: ip, recipientDomain: "qq.com", count: 4 }),
      expectInvalidArgument("count"),
    );
  });

  it("dry_run does not consume", async () => {
    const ip = freshIp();
    for (let i = 0; i < 5; i++) {
      const res = await client.canSend({ senderIp: ip, recipientDomain: "qq.com", dryRun: true });
      assert.equal(res.verdict, Verdict.ALLOW, `dry run ${i + 1}: ${res.detail}`);
      assert.equal(res.tiers.find((t) => t.name === "minute")!.remaining, 3);
    }
    for (let i = 0; i < 3; i++) {
      const res = await client.canSend({ senderIp: ip, recipientDomain: "qq.com" });
      assert.equal(res.verdict, Verdict.ALLOW, `send ${i + 1}: ${res.detail}`);
    }
    const dry = await client.canSend({ senderIp: ip, recipientDomain: "qq.com", dryRun: true });
    assert.equal(dry.verdict, Verdict.DEFER);
    assert.ok(dry.retryAfterMs > 0);
  });

  it("CanSendBatch answers in request order", async () => {
    const a = freshIp();
    const b = freshIp();
    const res = await client.canSendBatch([
      { senderIp: a, recipientDomain: "qq.com" },
      { senderIp: a, recipientDomain: "qq.com" },
      { senderIp: b, recipientDomain: "foxmail.com", dryRun: true },
      { senderIp: a, recipientDomain: "foxmail.com" },
      { senderIp: a, recipientDomain: "qq.com" },
    ]);
    assert.equal(res.length, 5);
    assert.deepEqual(
      res.map((r) => r.verdict),
      [Verdict.ALLOW, Verdict.ALLOW, Verdict.ALLOW, Verdict.ALLOW, Verdict.DEFER],
    );
    assert.deepEqual(
      res.map((r) => r.tiers.find((t) => t.name === "minute")!.remaining),
      [2, 1, 3, 0, 0],
    );
    assert.equal(res[4]!.reason, DeferReason.RATE_LIMITED);
    assert.ok(res.every((r) => r.provider === "tencent"));
  });

  it("ReportResult classifies 250 as DELIVERED and names the provider", async () => {
    const ip = freshIp();
    await client.canSend({ senderIp: ip, recipientDomain: "qq.com" });
    const res = await client.reportResult({
      senderIp: ip,
      recipientDomain: "qq.com",
      smtpCode: 250,
      enhancedCode: "2.0.0",
      reply: "250 2.0.0 Ok: queued as ABC123",
      attemptedAt: new Date(),
    });
    assert.equal(res.classification, Classification.DELIVERED);
    assert.equal(res.provider, "tencent");
    assert.equal(res.state, ReputationState.HEALTHY);
    assert.equal(res.stateChanged, false);
  });

  it("ReportResultBatch answers in request order; not attempted refunds", async () => {
    const ip = freshIp();
    for (let i = 0; i < 3; i++) {
      assert.equal((await client.canSend({ senderIp: ip, recipientDomain: "qq.com" })).verdict, Verdict.ALLOW);
    }
    const res = await client.reportResultBatch([
      { senderIp: ip, recipientDomain: "qq.com", smtpCode: 250, reply: "250 OK" },
      { senderIp: ip, recipientDomain: "foxmail.com", smtpCode: 0, notAttempted: true },
    ]);
    assert.equal(res.length, 2);
    assert.deepEqual(
      res.map((r) => r.classification),
      [Classification.DELIVERED, Classification.NOT_ATTEMPTED],
    );
    assert.ok(res.every((r) => r.provider === "tencent"));
    // The refunded token is available again.
    const again = await client.canSend({ senderIp: ip, recipientDomain: "qq.com" });
    assert.equal(again.verdict, Verdict.ALLOW, again.detail);
  });

  it("GetState returns the key, by domain or by provider", async () => {
    const ip = freshIp();
    await client.canSend({ senderIp: ip, recipientDomain: "qq.com" });
    await client.reportResult({ senderIp: ip, recipientDomain: "qq.com", smtpCode: 250 });
    const byDomain = await client.getState(ip, "qq.com");
    assert.equal(byDomain.senderIp, ip);
    assert.equal(byDomain.provider, "tencent");
    assert.equal(byDomain.state, ReputationState.HEALTHY);
    assertTencentTiers(byDomain.tiers);
    const byProvider = await client.getState(ip, "tencent");
    assert.equal(byProvider.senderIp, ip);
    assert.equal(byProvider.provider, "tencent");
  });

  it("the raw generated clients work too", async () => {
    const raw = await client.admin.resolveProvider({ domain: "qq.com" });
    assert.equal(raw.provider, "tencent");
    assert.equal(raw.via, "table");
  });

  it("a bad sender IP is INVALID_ARGUMENT naming sender_ip", async () => {
    await assert.rejects(
      client.canSend({ senderIp: "999.1.1.1", recipientDomain: "qq.com" }),
      expectInvalidArgument("sender_ip"),
    );
    await assert.rejects(
      client.reportResult({ senderIp: "999.1.1.1", recipientDomain: "qq.com", smtpCode: 250 }),
      expectInvalidArgument("sender_ip"),
    );
  });

  it("a batch with a bad item names it with its index", async () => {
    const ip = freshIp();
    await assert.rejects(
      client.canSendBatch([
        { senderIp: ip, recipientDomain: "qq.com" },
        { senderIp: "999.1.1.1", recipientDomain: "qq.com" },
      ]),
      expectInvalidArgument("requests[1].sender_ip"),
    );
    // One invalid item fails the whole batch: nothing was taken for item 0.
    const res = await client.canSend({ senderIp: ip, recipientDomain: "qq.com", dryRun: true });
    assert.equal(res.tiers.find((t) => t.name === "minute")!.remaining, 3);
    await assert.rejects(
      client.reportResultBatch([
        { senderIp: ip, recipientDomain: "qq.com", smtpCode: 250 },
        { senderIp: "999.1.1.1", recipientDomain: "qq.com", smtpCode: 250 },
      ]),
      expectInvalidArgument("results[1].sender_ip"),
    );
  });
});
