// A relay's connector endpoint, scripted, on a real WebSocket listener on
// 127.0.0.1: it speaks the real protocol (yamux Session over ws, the control
// stream) and lets a test decide what a relay does — refuse the credential,
// never confirm a registration, stop answering pings, send GoAway, die and
// come back on the same port. The connector's RelayConnection and HAManager
// dial it as they dial a relay.
import { EventEmitter, once } from 'node:events';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  GoAwayCode,
  Session,
  TUNNEL_WS_OPTIONS,
  encodeControl,
  readControl,
  wsTransport,
  type ControlMessage,
  type YamuxStream,
} from '@tunnel/protocol';

export interface RelayScript {
  /** Answer the upgrade with this JSON error instead of accepting it. */
  refuse: { status: number; code: string; message: string; retryAfter?: string } | null;
  /** Refuse only an upgrade presenting this credential (a credential rotation the relay does not accept). */
  refuseOnly: string | null;
  /** Answer a register with registered (else the connector waits). */
  confirm: boolean;
  /** Echo a connector's drain. */
  echoDrain: boolean;
}

/** One connector connection as this relay holds it. */
export class RelayEnd extends EventEmitter<{ control: [m: ControlMessage]; closed: [] }> {
  registered: Extract<ControlMessage, { type: 'register' }> | null = null;
  drainSeen = false;
  closed = false;
  private control: YamuxStream | null = null;

  constructor(
    readonly ws: WebSocket,
    readonly session: Session,
    readonly headers: http.IncomingHttpHeaders,
    private readonly relay: ScriptedRelay,
    readonly connectionId: string,
  ) {
    super();
    ws.on('error', () => {});
    session.on('stream', (s) => {
      s.on('error', () => {});
      if (this.control) return s.destroy();
      this.control = s;
      readControl(s, { message: (m) => this.onControl(m), bad: () => session.destroy() });
    });
    session.on('close', () => {
      this.closed = true;
      this.emit('closed');
    });
  }

  private onControl(m: ControlMessage): void {
    if (m.type === 'register') {
      this.registered = m;
      if (this.relay.script.confirm) this.send({ type: 'registered', relayId: this.relay.id, region: 'test', connectionId: this.connectionId });
    } else if (m.type === 'drain') {
      this.drainSeen = true;
      if (this.relay.script.echoDrain) this.send({ type: 'drain' });
    }
    this.emit('control', m);
  }

  send(m: ControlMessage): void {
    this.control?.write(encodeControl(m));
  }

  /** Confirm a registration that was held back. */
  confirm(): void {
    this.send({ type: 'registered', relayId: this.relay.id, region: 'test', connectionId: this.connectionId });
  }

  /** Raw bytes on the control stream (a hostile relay). */
  sendRaw(bytes: Buffer): void {
    this.control?.write(bytes);
  }

  /** A request stream, as the relay opens one for a client's request. */
  openStream(): YamuxStream {
    const s = this.session.openStream();
    s.on('error', () => {});
    return s;
  }

  goAway(): void {
    this.session.goAway(GoAwayCode.Normal);
  }

  /** Stop reading: the connector's pings go unanswered (a relay that hangs). */
  hang(): void {
    const socket = (this.ws as unknown as { _socket: Socket })._socket;
    socket.pause();
    socket.removeAllListeners('data');
  }

  get state(): 'registering' | 'registered' | 'closed' {
    return this.closed ? 'closed' : this.registered ? 'registered' : 'registering';
  }
}

export class ScriptedRelay extends EventEmitter<{ connection: [end: RelayEnd] }> {
  readonly script: RelayScript = { refuse: null, refuseOnly: null, confirm: true, echoDrain: true };
  /** Every connection ever accepted, in order. */
  readonly ends: RelayEnd[] = [];
  /** Upgrade requests seen (accepted or refused). */
  upgrades = 0;
  private server: http.Server;
  private readonly wss = new WebSocketServer({ noServer: true, ...TUNNEL_WS_OPTIONS });
  private readonly sockets = new Set<Socket>();
  private port = 0;

  private constructor(readonly id: string) {
    super();
    this.server = this.createServer();
  }

  static async start(id: string): Promise<ScriptedRelay> {
    const r = new ScriptedRelay(id);
    await r.listen();
    return r;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** Connections still open. */
  get live(): RelayEnd[] {
    return this.ends.filter((e) => !e.closed);
  }

  /** The relay process dies: the port refuses connections, every connection drops. */
  async kill(): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  /** The relay comes back on the same port. */
  async revive(): Promise<void> {
    this.server = this.createServer();
    await this.listen(this.port);
  }

  private createServer(): http.Server {
    const server = http.createServer((_req, res) => res.writeHead(404).end());
    server.on('connection', (s) => {
      s.on('error', () => {}); // a connector that resets is not this relay's failure
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    server.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket as Socket, head));
    return server;
  }

  private async listen(port = 0): Promise<void> {
    this.server.listen(port, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as AddressInfo).port;
  }

  private onUpgrade(req: http.IncomingMessage, socket: Socket, head: Buffer): void {
    this.upgrades++;
    const { refuseOnly } = this.script;
    const refuse = refuseOnly === null || req.headers.authorization === `Bearer ${refuseOnly}` ? this.script.refuse : null;
    if (refuse || req.url !== '/v1/connect') {
      const r: NonNullable<RelayScript['refuse']> = refuse ?? { status: 404, code: 'not_found', message: 'no such endpoint' };
      const body = JSON.stringify({ error: { code: r.code, message: r.message } });
      const retryAfter = r.retryAfter !== undefined ? `retry-after: ${r.retryAfter}\r\n` : '';
      socket.end(
        `HTTP/1.1 ${r.status} Refused\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${retryAfter}connection: close\r\n\r\n${body}`,
      );
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const session = new Session(wsTransport(ws), { client: false, keepaliveIntervalMs: 0 });
      const end = new RelayEnd(ws, session, req.headers, this, `${this.id}-conn-${this.ends.length}`);
      this.ends.push(end);
      this.emit('connection', end);
    });
  }

  async close(): Promise<void> {
    for (const e of this.ends) if (!e.closed) e.session.destroy();
    if (this.server.listening) await this.kill();
    this.wss.close();
  }
}
