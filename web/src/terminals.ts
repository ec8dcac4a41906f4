// Terminal tabs over one multiplexed socket, /terminal/ws/multi (PROTOCOL.md §3).
//
// Resume without duplicates: each view remembers `next`, the byte position just after the last
// output it wrote. After a reconnect it asks `reattach_session {offset: next}` and the daemon
// sends exactly the bytes from there on; output whose end is not past `next` was already shown
// and is skipped. When the daemon no longer holds those bytes it says how many were lost (`gap`)
// and the view writes a marker line instead of pretending nothing happened.

import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import { Backoff, stillSignedIn, wsUrl } from './api';
import { h } from './dom';

interface ServerMessage {
  type: string;
  sessionId?: string;
  data?: Record<string, unknown>;
}

interface OutputData {
  data?: string;
  offset?: number;
  next?: number;
  gap?: number;
}

const PENDING_INPUT_MAX = 4096;

export type TerminalState = 'starting' | 'live' | 'reconnecting' | 'ended';

export interface TerminalEvents {
  renamed(view: TerminalView, name: string): void;
  closed(view: TerminalView): void;
  state(view: TerminalView): void;
}

export class TerminalHub {
  private ws: WebSocket | null = null;
  private readonly views = new Map<string, TerminalView>();
  private readonly backoff = new Backoff();
  private open = false;
  private timer: number | undefined;
  onSignedOut: () => void = () => undefined;

  constructor(private readonly workspace: string, readonly events: TerminalEvents) {}

  add(view: TerminalView): void {
    this.views.set(view.id, view);
    if (this.open) view.socketOpened();
    else this.connect();
  }

  remove(view: TerminalView): void {
    this.views.delete(view.id);
  }

  send(message: object): boolean {
    if (!this.open || !this.ws) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  private connect(): void {
    if (this.ws || this.timer !== undefined) return;
    const ws = new WebSocket(wsUrl('/terminal/ws/multi', { workspace: this.workspace }));
    this.ws = ws;
    ws.onopen = () => {
      this.open = true;
      for (const view of this.views.values()) view.socketOpened();
    };
    ws.onmessage = (event) => this.dispatch(event.data);
    ws.onclose = () => {
      this.ws = null;
      const wasOpen = this.open;
      this.open = false;
      for (const view of this.views.values()) view.socketLost();
      if (wasOpen) this.backoff.reset();
      void this.scheduleReconnect();
    };
  }

  private async scheduleReconnect(): Promise<void> {
    if (this.views.size === 0) return;
    if (this.backoff.attempts >= 3 && !(await stillSignedIn())) {
      this.onSignedOut();
      return;
    }
    this.timer = window.setTimeout(() => {
      this.timer = undefined;
      this.connect();
    }, this.backoff.next());
  }

  private dispatch(raw: unknown): void {
    let message: ServerMessage;
    try {
      message = JSON.parse(String(raw)) as ServerMessage;
    } catch {
      return;
    }
    const id = message.sessionId ?? (message.data?.sessionId as string | undefined);
    const view = id ? this.views.get(id) : undefined;
    if (view) view.handle(message);
    else if (message.type === 'error') console.warn('terminal socket error', message.data);
  }
}

export class TerminalView {
  readonly element: HTMLElement;
  readonly term: Terminal;
  private readonly fit = new FitAddon();
  private readonly banner: HTMLElement;
  private readonly screen: HTMLElement;
  private next = 0;
  private pending = '';
  private known: boolean;
  private fitted = false;
  state: TerminalState = 'starting';

  constructor(
    private readonly hub: TerminalHub,
    readonly id: string,
    public name: string,
    existing: boolean,
  ) {
    this.known = existing;
    this.screen = h('div', { class: 'term-screen' });
    this.banner = h('div', { class: 'term-banner', role: 'status' });
    this.element = h('section', { class: 'pane term-pane', 'data-session': id }, this.banner, this.screen);
    this.term = new Terminal({
      cursorBlink: true,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      lineHeight: 1.2,
      scrollback: 5000,
      theme: { background: '#101418', foreground: '#d8dee4' },
    });
    this.term.loadAddon(this.fit);
    this.term.onData((data) => this.input(data));
    this.term.onBinary((data) => this.input(data));
    this.term.onResize(({ rows, cols }) => {
      this.hub.send({ type: 'resize', sessionId: this.id, data: { rows, cols } });
    });
    this.setState('starting');
  }

  /** Called once the pane is in the document, so xterm can measure its font. */
  mount(): void {
    this.term.open(this.screen);
    new ResizeObserver(() => this.refit()).observe(this.screen);
    this.hub.add(this);
  }

  refit(): void {
    if (this.screen.clientWidth === 0 || this.screen.clientHeight === 0) return; // hidden tab
    this.fit.fit();
    this.fitted = true;
  }

  focus(): void {
    this.refit();
    this.term.focus();
  }

  rename(name: string): void {
    this.hub.send({ type: 'rename_session', data: { sessionId: this.id, name } });
  }

  close(): void {
    if (this.state === 'ended' || !this.hub.send({ type: 'close_session', data: { sessionId: this.id } })) {
      this.dispose();
    }
  }

  dispose(): void {
    this.hub.remove(this);
    this.term.dispose();
    this.element.remove();
    this.hub.events.closed(this);
  }

  socketOpened(): void {
    if (this.state === 'ended') return;
    this.refit();
    // A view that has not been laid out yet (a background tab) sends no size: the PTY keeps its own.
    const size = this.fitted ? { rows: this.term.rows, cols: this.term.cols } : {};
    if (!this.known) {
      this.hub.send({
        type: 'create_session',
        data: { sessionId: this.id, rows: this.term.rows, cols: this.term.cols, name: this.name },
      });
    } else {
      this.hub.send({ type: 'reattach_session', data: { sessionId: this.id, offset: this.next, ...size } });
    }
  }

  socketLost(): void {
    if (this.state !== 'ended') this.setState('reconnecting');
  }

  handle(message: ServerMessage): void {
    const data = message.data ?? {};
    switch (message.type) {
      case 'session_created':
        this.known = true;
        this.setState('live');
        break;
      case 'session_reattached':
        this.setState('live');
        break;
      case 'output':
      case 'scrollback':
        this.write(data as OutputData);
        break;
      case 'session_renamed':
        this.name = String(data.name ?? this.name);
        this.hub.events.renamed(this, this.name);
        break;
      case 'session_closed':
        if (data.reason === 'user_requested') {
          this.dispose();
        } else {
          const code = data.exitCode ?? '?';
          this.term.write(`\r\n\x1b[2m[process exited with code ${code}]\x1b[0m\r\n`);
          this.setState('ended', `The program exited (code ${code}). Close the tab to remove it.`);
        }
        break;
      case 'error':
        if (data.error === 'session_exists' && !this.known) {
          // Our create went through before the connection dropped: attach to it instead.
          this.known = true;
          this.socketOpened();
        } else if (this.state !== 'live') {
          this.setState('ended', `Terminal unavailable: ${String(data.message ?? data.error ?? 'error')}`);
        } else {
          this.setBanner(`Error: ${String(data.message ?? data.error)}`, 'error');
        }
        break;
      default:
        break;
    }
  }

  private write(chunk: OutputData): void {
    const { offset, next } = chunk;
    if (typeof next === 'number' && typeof offset === 'number' && next > offset && next <= this.next) {
      return; // already on screen: a duplicate after a resume
    }
    if (chunk.gap) {
      this.term.write(`\r\n\x1b[2;33m[… ${chunk.gap} bytes of output were not kept …]\x1b[0m\r\n`);
    }
    if (chunk.data) this.term.write(chunk.data);
    if (typeof next === 'number' && next > this.next) this.next = next;
  }

  /** Keys typed while the session is starting or reconnecting are kept (bounded) and sent once it is live. */
  private input(data: string): void {
    if (this.state === 'live' && this.hub.send({ type: 'input', sessionId: this.id, data: { data } })) return;
    if (this.state !== 'ended' && this.pending.length + data.length <= PENDING_INPUT_MAX) this.pending += data;
  }

  private flushInput(): void {
    if (this.pending && this.state === 'live') {
      const data = this.pending;
      this.pending = '';
      this.input(data);
    }
  }

  private setState(state: TerminalState, text?: string): void {
    this.state = state;
    this.element.dataset.state = state;
    if (state === 'live') {
      this.setBanner('', '');
      this.flushInput();
    }
    else if (state === 'reconnecting') this.setBanner('Connection lost — reconnecting…', 'warn');
    else if (state === 'starting') this.setBanner('Connecting…', 'info');
    else this.setBanner(text ?? 'Terminal ended.', 'error');
    this.hub.events.state(this);
  }

  private setBanner(text: string, level: string): void {
    this.banner.textContent = text;
    this.banner.dataset.level = level;
    this.banner.hidden = text === '';
  }
}
