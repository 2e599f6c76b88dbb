// @sendgate/client: a small typed wrapper around the generated sendgate.v1
// clients. Everything the wrapper does not cover is reachable through the raw
// generated clients (`client.admission`, `client.admin`).

import { create } from "@bufbuild/protobuf";
import {
  durationMs,
  timestampDate,
  timestampFromDate,
  timestampFromMs,
  type Duration,
  type Timestamp,
} from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createClient,
  type CallOptions,
  type Client,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type * as http2 from "node:http2";

import {
  AdminService,
  AdmissionService,
  CanSendRequestSchema,
  Classification,
  DeferReason,
  Outcome,
  ReportResultRequestSchema,
  ReputationState,
  Verdict,
  type CanSendRequest,
  type CanSendResponse,
  type KeyState,
  type ReportResultRequest,
  type ReportResultResponse,
  type TierStatus,
  type Transition,
} from "./gen/sendgate/v1/sendgate_pb.js";

export * from "./gen/sendgate/v1/sendgate_pb.js";
export { Code, ConnectError };
export type { Interceptor, Transport };

/** The address a sendgate server listens on for gRPC by default. */
export const DEFAULT_BASE_URL = "http://127.0.0.1:7878";
/** The per-call deadline used when neither the call nor the client sets one. */
export const DEFAULT_TIMEOUT_MS = 2000;

/** TLS settings, passed to Node's http2.connect(). Setting any turns on TLS. */
export interface TlsOptions {
  /** CA certificate(s) to trust, PEM. Default: Node's bundled roots. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Client certificate, PEM, for mutual TLS. */
  cert?: string | Buffer;
  /** Client private key, PEM, for mutual TLS. */
  key?: string | Buffer;
  /** Server name to verify, when it differs from the URL's host. */
  servername?: string;
  /** Verify the server certificate (default true). */
  rejectUnauthorized?: boolean;
}

export interface SendgateClientOptions {
  /**
   * The server's gRPC address as a URL. Default "http://127.0.0.1:7878"
   * (plaintext HTTP/2), or "https://127.0.0.1:7878" when `tls` is set.
   */
  baseUrl?: string;
  /**
   * Bearer token sent as `authorization: Bearer <token>` on every call. A
   * function is called per call, so rotated tokens are picked up.
   */
  token?: string | (() => string | Promise<string>);
  /** Default per-call deadline in milliseconds (default 2000). */
  timeoutMs?: number;
  /** TLS settings; requires an https:// baseUrl. */
  tls?: TlsOptions;
  /** More interceptors, run after the token interceptor. */
  interceptors?: Interceptor[];
  /** Use this transport instead of building one (baseUrl, tls, token ignored). */
  transport?: Transport;
}

/** Options of one call. */
export interface SendgateCallOptions {
  /** Deadline of this call in milliseconds; default the client's timeoutMs. */
  timeoutMs?: number;
  /** Cancels the call. */
  signal?: AbortSignal;
  /** Extra request metadata. */
  headers?: CallOptions["headers"];
}

export interface CanSendParams {
  /** IPv4 or IPv6 text of the sending IP. */
  senderIp: string;
  /** A domain or a whole address ("user@QQ.com" is "qq.com"). */
  recipientDomain: string;
  /** Messages the attempt counts as; default 1. */
  count?: number;
  /** Answer without consuming anything. */
  dryRun?: boolean;
}

/** One rate tier of a key, with uint64s and durations as plain numbers. */
export interface Tier {
  /** "second", "minute", "hour" or "day". */
  name: string;
  /** Effective limit, after throttling and learned ceilings. */
  limit: number;
  /** Whole messages available after this decision. */
  remaining: number;
  /** The tier's window in milliseconds. */
  windowMs: number;
  /** Milliseconds until one message is available; 0 when one is. */
  retryAfterMs: number;
  /** The configured limit, before throttling and learned ceilings. */
  configuredLimit: number;
  /** Learned ceiling; 0 when there is none. */
  learnedCeiling: number;
  /** The tier is a calendar day in the provider's time zone. */
  calendar: boolean;
}

export interface CanSendResult {
  /** Verdict.ALLOW or Verdict.DEFER. */
  verdict: Verdict;
  /** verdict === Verdict.ALLOW. */
  allowed: boolean;
  /** Why deferred; DeferReason.UNSPECIFIED when allowed. */
  reason: DeferReason;
  /** When deferred, milliseconds until it is worth asking again; 0 for ALLOW. */
  retryAfterMs: number;
  /** The provider the recipient domain resolved to (e.g. "tencent"). */
  provider: string;
  /** State of the (sender IP, provider) key at decision time. */
  state: ReputationState;
  /** Every tier that applies. */
  tiers: Tier[];
  /** One human sentence: what limited the answer. */
  detail: string;
}

export interface ReportResultParams {
  senderIp: string;
  recipientDomain: string;
  /** Basic SMTP reply code; 0 when there was no reply (connect failure, timeout). */
  smtpCode: number;
  /** Enhanced status code ("4.7.28"); parsed from reply when omitted. */
  enhancedCode?: string;
  /** The whole reply text, multi-line replies joined. */
  reply?: string;
  /** Messages this result covers; default 1. */
  count?: number;
  /** When the attempt was made (Date or epoch milliseconds); default now. */
  attemptedAt?: Date | number;
  /** The attempt was not made: refund the tokens CanSend took. */
  notAttempted?: boolean;
}

export interface ReportResultResult {
  classification: Classification;
  /** Id of the rule that matched; empty when the default mapping decided. */
  rule: string;
  /** State after the report. */
  state: ReputationState;
  /** End of a block, hold or probe wait, when there is one. */
  stateUntil?: Date;
  /** The report moved the state. */
  stateChanged: boolean;
  provider: string;
}

export interface TransitionInfo {
  at?: Date;
  from: ReputationState;
  to: ReputationState;
  reason: string;
  reply: string;
  actor: string;
}

export interface KeyStateInfo {
  senderIp: string;
  provider: string;
  state: ReputationState;
  since?: Date;
  /** When the current state ends; undefined when it has no end. */
  until?: Date;
  reason: string;
  lastReply: string;
  strikes: number;
  /** 0..1, the throttle multiplier on every tier. */
  rateFactor: number;
  tiers: Tier[];
  /** Newest first. */
  history: TransitionInfo[];
  needsRemediation: boolean;
  /** Reports counted per classification name. */
  reportCounts: Record<string, number>;
}

/** True when err is a ConnectError with code INVALID_ARGUMENT (bad input). */
export function isInvalidArgument(err: unknown): err is ConnectError {
  return err instanceof ConnectError && err.code === Code.InvalidArgument;
}

/** An interceptor that sends `authorization: Bearer <token>`. */
export function bearerTokenInterceptor(
  token: string | (() => string | Promise<string>),
): Interceptor {
  return (next) => async (req) => {
    const value = typeof token === "function" ? await token() : token;
    req.header.set("authorization", `Bearer ${value}`);
    return next(req);
  };
}

/** Builds the HTTP/2 gRPC transport the client uses. */
export function createSendgateTransport(
  opts: SendgateClientOptions = {},
): { transport: Transport; sessionManager: Http2SessionManager } {
  const baseUrl = opts.baseUrl ?? (opts.tls ? "https://127.0.0.1:7878" : DEFAULT_BASE_URL);
  const url = new URL(baseUrl);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`sendgate: baseUrl must be http:// or https://, got ${baseUrl}`);
  }
  if (opts.tls && url.protocol !== "https:") {
    throw new Error(`sendgate: tls options need an https:// baseUrl, got ${baseUrl}`);
  }
  const nodeOptions: http2.SecureClientSessionOptions = {};
  if (opts.tls) {
    const { ca, cert, key, servername, rejectUnauthorized } = opts.tls;
    Object.assign(nodeOptions, { ca, cert, key, servername, rejectUnauthorized });
    for (const k of Object.keys(nodeOptions) as (keyof typeof nodeOptions)[]) {
      if (nodeOptions[k] === undefined) delete nodeOptions[k];
    }
  }
  const sessionManager = new Http2SessionManager(url, {}, nodeOptions);
  const interceptors: Interceptor[] = [];
  if (opts.token !== undefined && opts.token !== "") {
    interceptors.push(bearerTokenInterceptor(opts.token));
  }
  interceptors.push(...(opts.interceptors ?? []));
  const transport = createGrpcTransport({
    baseUrl,
    sessionManager,
    interceptors,
    defaultTimeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  });
  return { transport, sessionManager };
}

/** A typed client for sendgate's AdmissionService and AdminService. */
export class SendgateClient {
  /** The raw generated AdmissionService client (all RPCs, generated types). */
  readonly admission: Client<typeof AdmissionService>;
  /** The raw generated AdminService client (all RPCs, generated types). */
  readonly admin: Client<typeof AdminService>;
  /** The transport both clients use. */
  readonly transport: Transport;
  private readonly timeoutMs: number;
  private readonly sessionManager?: Http2SessionManager;

  constructor(opts: SendgateClientOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(this.timeoutMs > 0)) {
      throw new Error(`sendgate: timeoutMs must be > 0, got ${opts.timeoutMs}`);
    }
    if (opts.transport) {
      this.transport = opts.transport;
    } else {
      const built = createSendgateTransport(opts);
      this.transport = built.transport;
      this.sessionManager = built.sessionManager;
    }
    this.admission = createClient(AdmissionService, this.transport);
    this.admin = createClient(AdminService, this.transport);
  }

  /** May senderIp start a delivery to recipientDomain now? A DEFER is data, not an error. */
  async canSend(params: CanSendParams, opts?: SendgateCallOptions): Promise<CanSendResult> {
    const res = await this.admission.canSend(canSendRequest(params), this.callOptions(opts));
    return canSendResult(res);
  }

  /** Many independent checks in one round trip; results in request order. */
  async canSendBatch(
    items: CanSendParams[],
    opts?: SendgateCallOptions,
  ): Promise<CanSendResult[]> {
    const res = await this.admission.canSendBatch(
      { requests: items.map(canSendRequest) },
      this.callOptions(opts),
    );
    return res.responses.map(canSendResult);
  }

  /** Tells sendgate what happened to an attempt. */
  async reportResult(
    params: ReportResultParams,
    opts?: SendgateCallOptions,
  ): Promise<ReportResultResult> {
    const res = await this.admission.reportResult(
      reportResultRequest(params),
      this.callOptions(opts),
    );
    return reportResultResult(res);
  }

  /** Many reports in one round trip; results in request order. */
  async reportResultBatch(
    items: ReportResultParams[],
    opts?: SendgateCallOptions,
  ): Promise<ReportResultResult[]> {
    const res = await this.admission.reportResultBatch(
      { results: items.map(reportResultRequest) },
      this.callOptions(opts),
    );
    return res.responses.map(reportResultResult);
  }

  /**
   * Everything known about one (sender IP, provider) key. The second argument
   * is a provider name ("tencent") or a domain or address, resolved.
   */
  async getState(
    senderIp: string,
    domainOrProvider: string,
    opts?: SendgateCallOptions,
  ): Promise<KeyStateInfo> {
    const res = await this.admin.getState(
      { senderIp, recipientDomainOrProvider: domainOrProvider },
      this.callOptions(opts),
    );
    if (!res.state) {
      throw new ConnectError("sendgate: GetState returned no state", Code.Internal);
    }
    return keyStateInfo(res.state);
  }

  /** Closes the HTTP/2 connection; later calls open a new one. */
  close(): void {
    this.sessionManager?.abort();
  }

  private callOptions(opts?: SendgateCallOptions): CallOptions {
    return {
      timeoutMs: opts?.timeoutMs ?? this.timeoutMs,
      signal: opts?.signal,
      headers: opts?.headers,
    };
  }
}

/** Creates a SendgateClient. */
export function createSendgateClient(opts: SendgateClientOptions = {}): SendgateClient {
  return new SendgateClient(opts);
}

function canSendRequest(p: CanSendParams): CanSendRequest {
  return create(CanSendRequestSchema, {
    senderIp: p.senderIp,
    recipientDomain: p.recipientDomain,
    count: p.count ?? 0,
    dryRun: p.dryRun ?? false,
  });
}

function reportResultRequest(p: ReportResultParams): ReportResultRequest {
  let attemptedAt: Timestamp | undefined;
  if (p.attemptedAt instanceof Date) {
    attemptedAt = timestampFromDate(p.attemptedAt);
  } else if (typeof p.attemptedAt === "number") {
    attemptedAt = timestampFromMs(p.attemptedAt);
  }
  return create(ReportResultRequestSchema, {
    senderIp: p.senderIp,
    recipientDomain: p.recipientDomain,
    smtpCode: p.smtpCode,
    enhancedCode: p.enhancedCode ?? "",
    reply: p.reply ?? "",
    count: p.count ?? 0,
    attemptedAt,
    outcome: p.notAttempted ? Outcome.NOT_ATTEMPTED : Outcome.UNSPECIFIED,
  });
}

function ms(d: Duration | undefined): number {
  return d ? durationMs(d) : 0;
}

function date(t: Timestamp | undefined): Date | undefined {
  return t ? timestampDate(t) : undefined;
}

function tier(t: TierStatus): Tier {
  return {
    name: t.name,
    limit: Number(t.limit),
    remaining: Number(t.remaining),
    windowMs: ms(t.window),
    retryAfterMs: ms(t.retryAfter),
    configuredLimit: Number(t.configuredLimit),
    learnedCeiling: Number(t.learnedCeiling),
    calendar: t.calendar,
  };
}

function canSendResult(r: CanSendResponse): CanSendResult {
  return {
    verdict: r.verdict,
    allowed: r.verdict === Verdict.ALLOW,
    reason: r.reason,
    retryAfterMs: ms(r.retryAfter),
    provider: r.provider,
    state: r.state,
    tiers: r.tiers.map(tier),
    detail: r.detail,
  };
}

function reportResultResult(r: ReportResultResponse): ReportResultResult {
  return {
    classification: r.classification,
    rule: r.rule,
    state: r.state,
    stateUntil: date(r.stateUntil),
    stateChanged: r.stateChanged,
    provider: r.provider,
  };
}

function transitionInfo(t: Transition): TransitionInfo {
  return {
    at: date(t.at),
    from: t.from,
    to: t.to,
    reason: t.reason,
    reply: t.reply,
    actor: t.actor,
  };
}

function keyStateInfo(s: KeyState): KeyStateInfo {
  const reportCounts: Record<string, number> = {};
  for (const [k, v] of Object.entries(s.reportCounts)) {
    reportCounts[k] = Number(v);
  }
  return {
    senderIp: s.senderIp,
    provider: s.provider,
    state: s.state,
    since: date(s.since),
    until: date(s.until),
    reason: s.reason,
    lastReply: s.lastReply,
    strikes: s.strikes,
    rateFactor: s.rateFactor,
    tiers: s.tiers.map(tier),
    history: s.history.map(transitionInfo),
    needsRemediation: s.needsRemediation,
    reportCounts,
  };
}
