// The wrapper against an in-process fake server: no sendgate binary needed.
// Checks request mapping, result conversion, the bearer token and deadlines.

import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { after, before, describe, it } from "node:test";

import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";

import {
  AdmissionService,
  AdminService,
  CanSendResponseSchema,
  Classification,
  Code,
  ConnectError,
  DeferReason,
  KeyStateSchema,
  Outcome,
  ReputationState,
  TierStatusSchema,
  Verdict,
  createSendgateClient,
  isInvalidArgument,
  type CanSendRequest,
  type ReportResultRequest,
  type SendgateClient,
} from "../src/index.js";

const seen: { auth: string | null; canSend: CanSendRequest[]; reports: ReportResultRequest[] } = {
  auth: null,
  canSend: [],
  reports: [],
};

function decide(req: CanSendRequest) {
  if (req.senderIp === "999.1.1.1") {
    throw new ConnectError(`sender_ip: not an IP address: "999.1.1.1"`, Code.InvalidArgument);
  }
  const deferred = req.recipientDomain === "deferred.example";
  return create(CanSendResponseSchema, {
    verdict: deferred ? Verdict.DEFER : Verdict.ALLOW,
    reason: deferred ? DeferReason.RATE_LIMITED : DeferReason.UNSPECIFIED,
    retryAfter: deferred ? durationFromMs(1500) : undefined,
    provider: req.recipientDomain === "qq.com" ? "tencent" : req.recipientDomain,
    state: ReputationState.HEALTHY,
    tiers: [
      create(TierStatusSchema, {
        name: "minute",
        limit: 3n,
        remaining: 2n,
        window: durationFromMs(60_000),
        configuredLimit: 3n,
      }),
    ],
    detail: deferred ? "minute tier exhausted: 3/3" : "",
  });
}

function routes(router: ConnectRouter) {
  router.service(AdmissionService, {
    canSend(req, ctx) {
      seen.auth = ctx.requestHeader.get("authorization");
      seen.canSend.push(req);
      return decide(req);
    },
    canSendBatch(req) {
      return { responses: req.requests.map(decide) };
    },
    reportResult(req) {
      seen.reports.push(req);
      return {
        classification:
          req.outcome === Outcome.NOT_ATTEMPTED ? Classification.NOT_ATTEMPTED : Classification.DELIVERED,
        provider: "tencent",
        state: ReputationState.HEALTHY,
        stateUntil: req.outcome === Outcome.NOT_ATTEMPTED ? undefined : timestampFromMs(1_700_000_000_000),
      };
    },
    async reportResultBatch(req, ctx) {
      // Slow on purpose: the deadline test needs it.
      await new Promise((r) => setTimeout(r, 300));
      ctx.signal.throwIfAborted();
      return { responses: req.results.map(() => ({ classification: Classification.DELIVERED })) };
    },
  });
  router.service(AdminService, {
    getState(req) {
      return {
        state: create(KeyStateSchema, {
          senderIp: req.senderIp,
          provider: "tencent",
          state: ReputationState.HEALTHY,
          rateFactor: 1,
          reportCounts: { CLASSIFICATION_DELIVERED: 7n },
        }),
      };
    },
  });
}

describe("SendgateClient (fake server)", () => {
  let server: http2.Http2Server;
  let client: SendgateClient;

  before(async () => {
    server = http2.createServer(connectNodeAdapter({ routes }));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const addr = server.address();
    const port = typeof addr === "object" && addr ? addr.port : 0;
    client = createSendgateClient({ baseUrl: `http://127.0.0.1:${port}`, token: "s3cret" });
  });

  after(async () => {
    client.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("maps CanSend both ways and sends the bearer token", async () => {
    const res = await client.canSend({ senderIp: "192.0.2.1", recipientDomain: "qq.com", count: 2, dryRun: true });
    assert.equal(seen.auth, "Bearer s3cret");
    const req = seen.canSend.at(-1)!;
    assert.equal(req.senderIp, "192.0.2.1");
    assert.equal(req.count, 2);
    assert.equal(req.dryRun, true);
    assert.equal(res.verdict, Verdict.ALLOW);
    assert.equal(res.allowed, true);
    assert.equal(res.retryAfterMs, 0);
    assert.equal(res.provider, "tencent");
    assert.deepEqual(res.tiers[0], {
      name: "minute",
      limit: 3,
      remaining: 2,
      windowMs: 60_000,
      retryAfterMs: 0,
      configuredLimit: 3,
      learnedCeiling: 0,
      calendar: false,
    });
  });

  it("returns retryAfterMs as a number for a DEFER", async () => {
    const res = await client.canSend({ senderIp: "192.0.2.1", recipientDomain: "deferred.example" });
    assert.equal(res.verdict, Verdict.DEFER);
    assert.equal(res.allowed, false);
    assert.equal(res.reason, DeferReason.RATE_LIMITED);
    assert.equal(res.retryAfterMs, 1500);
  });

  it("keeps batch order", async () => {
    const res = await client.canSendBatch([
      { senderIp: "192.0.2.1", recipientDomain: "deferred.example" },
      { senderIp: "192.0.2.1", recipientDomain: "qq.com" },
    ]);
    assert.deepEqual(res.map((r) => r.verdict), [Verdict.DEFER, Verdict.ALLOW]);
  });

  it("maps ReportResult fields, attemptedAt and notAttempted", async () => {
    const at = new Date(1_700_000_000_123);
    const res = await client.reportResult({
      senderIp: "192.0.2.1",
      recipientDomain: "qq.com",
      smtpCode: 421,
      enhancedCode: "4.7.0",
      reply: "421 4.7.0 try later",
      count: 3,
      attemptedAt: at,
    });
    const req = seen.reports.at(-1)!;
    assert.equal(req.smtpCode, 421);
    assert.equal(req.enhancedCode, "4.7.0");
    assert.equal(req.count, 3);
    assert.equal(req.outcome, Outcome.UNSPECIFIED);
    assert.equal(timestampMs(req.attemptedAt!), at.getTime());
    assert.equal(res.classification, Classification.DELIVERED);
    assert.equal(res.stateUntil?.getTime(), 1_700_000_000_000);

    const skipped = await client.reportResult({
      senderIp: "192.0.2.1",
      recipientDomain: "qq.com",
      smtpCode: 0,
      notAttempted: true,
    });
    assert.equal(seen.reports.at(-1)!.outcome, Outcome.NOT_ATTEMPTED);
    assert.equal(seen.reports.at(-1)!.attemptedAt, undefined);
    assert.equal(skipped.classification, Classification.NOT_ATTEMPTED);
    assert.equal(skipped.stateUntil, undefined);
  });

  it("converts GetState's map of uint64 to numbers", async () => {
    const st = await client.getState("192.0.2.1", "tencent");
    assert.equal(st.senderIp, "192.0.2.1");
    assert.equal(st.provider, "tencent");
    assert.deepEqual(st.reportCounts, { CLASSIFICATION_DELIVERED: 7 });
    assert.equal(st.until, undefined);
  });

  it("surfaces INVALID_ARGUMENT as a ConnectError", async () => {
    await assert.rejects(client.canSend({ senderIp: "999.1.1.1", recipientDomain: "qq.com" }), (err) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.InvalidArgument);
      assert.ok(isInvalidArgument(err));
      assert.match(err.message, /sender_ip/);
      return true;
    });
    assert.equal(isInvalidArgument(new Error("x")), false);
  });

  it("applies the per-call deadline", async () => {
    await assert.rejects(
      client.reportResultBatch([{ senderIp: "192.0.2.1", recipientDomain: "qq.com", smtpCode: 250 }], {
        timeoutMs: 50,
      }),
      (err) => err instanceof ConnectError && err.code === Code.DeadlineExceeded,
    );
    const ok = await client.reportResultBatch([{ senderIp: "192.0.2.1", recipientDomain: "qq.com", smtpCode: 250 }]);
    assert.equal(ok.length, 1);
  });

  it("exposes the raw generated clients", async () => {
    const raw = await client.admission.canSend({ senderIp: "192.0.2.9", recipientDomain: "qq.com" });
    assert.equal(raw.verdict, Verdict.ALLOW);
    assert.equal(typeof raw.tiers[0]!.limit, "bigint");
  });

  it("refuses tls options with an http:// URL", () => {
    assert.throws(() => createSendgateClient({ baseUrl: "http://127.0.0.1:1", tls: { rejectUnauthorized: false } }));
  });
});
