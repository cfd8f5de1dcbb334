import { randomBytes } from 'node:crypto';
import { ManualClock } from '../clock.js';
import { loadConfig, type ServerConfig } from '../config.js';
import { startServer, type RunningServer } from '../server.js';
import type { FleetStore } from '../store/store.js';

export const T0 = Date.parse('2026-03-01T12:00:00Z');

/** A real server on loopback over a real store, with a manual clock and no background sweeper. */
export class TestServer {
  readonly clock = new ManualClock(T0);
  readonly adminKey = `dmk_test_${randomBytes(16).toString('hex')}`;
  server!: RunningServer;
  readonly config: ServerConfig;
  /** Serve the dashboard from here instead of the build (set before `start`). */
  dashboardDir: string | undefined;

  constructor(
    private readonly openStore: () => Promise<FleetStore>,
    env: Record<string, string> = {},
  ) {
    this.config = loadConfig({
      DUMONT_PORT: '0',
      DUMONT_ADMIN_KEY: this.adminKey,
      DUMONT_RATE_LIMIT_PER_MINUTE: '0',
      DUMONT_LOG_LEVEL: 'warn',
      ...env,
    });
  }

  get url(): string {
    return this.server.url;
  }

  async start(): Promise<this> {
    this.server = await startServer(this.config, {
      clock: this.clock,
      logger: false,
      store: await this.openStore(),
      sweep: false,
      outbox: false,
      random: () => 0.5,
      ...(this.dashboardDir ? { dashboardDir: this.dashboardDir } : {}),
    });
    return this;
  }

  /** Stops the server and starts a new one on the same data (and the same clock). */
  async restart(): Promise<void> {
    await this.server.close();
    await this.start();
  }

  async close(): Promise<void> {
    await this.server?.close();
  }

  sweep(): Promise<number> {
    return this.server.sweeper.sweep();
  }

  /** Sends everything due in the outbox (provider actions, notifications) and records the outcomes. */
  drainOutbox(): Promise<number> {
    return this.server.outbox.drain();
  }

  /** The event types of one instance, oldest first. */
  async eventTypes(instanceId: number): Promise<string[]> {
    const res = await this.request('GET', `/api/v1/agent/instances/${instanceId}/events?limit=1000`);
    return (res.json.events as { type: string }[]).map((e) => e.type).reverse();
  }

  async request(method: string, path: string, options: { token?: string | null; body?: unknown; headers?: Record<string, string> } = {}) {
    const headers: Record<string, string> = { ...options.headers };
    const token = options.token === undefined ? this.adminKey : options.token;
    if (token !== null) headers.authorization = `Bearer ${token}`;
    let body: string | undefined;
    if (options.body !== undefined) {
      headers['content-type'] ??= 'application/json';
      body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
    }
    const response = await fetch(`${this.url}${path}`, { method, headers, body });
    const text = await response.text();
    let json: any;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: response.status, headers: response.headers, json, text };
  }

  async register(instanceId: number, hostname = `gpu-${instanceId}`, key = this.adminKey): Promise<string> {
    const res = await this.request('POST', '/api/v1/agent/instances', { token: key, body: { instance_id: instanceId, hostname } });
    if (res.status !== 201 && res.status !== 200) throw new Error(`register failed: ${res.status} ${res.text}`);
    return res.json.agent_token;
  }

  /** Posts a heartbeat stamped with the manual clock. */
  beat(token: string, body: Record<string, unknown>) {
    return this.request('POST', '/api/v1/agent/status', {
      token,
      body: { hostname: 'gpu-001', timestamp: new Date(this.clock.now()).toISOString(), ...body },
    });
  }
}
