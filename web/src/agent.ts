// An agent tab: one /agent/ws socket (PROTOCOL.md §5.4), the transcript, and the prompt box.
//
// Every history message carries `seq`; the view remembers the last one it applied and reconnects
// with `after=<seq>`, so nothing is shown twice and nothing is missed. A late joiner gets the whole
// retained history first (replay), then live messages, through the same rendering path.

import { Backoff, stillSignedIn, wsUrl } from './api';
import { h, truncate } from './dom';
import { type Json, Transcript } from './transcript';

/** The close code of a socket whose session was deleted (vm_agent/agents/ws.py). */
const SESSION_DELETED = 4404;

export interface AgentEvents {
  identified(view: AgentView, sessionId: string, agentType: string): void;
  signedOut(): void;
}

export class AgentView {
  readonly element: HTMLElement;
  private readonly transcript: Transcript;
  private readonly banner = h('div', { class: 'term-banner', role: 'status' });
  private readonly statusPill = h('span', { class: 'pill', 'data-status': 'connecting' }, 'connecting');
  private readonly agentLabel = h('span', { class: 'agent-type' }, '');
  private readonly policyLabel = h('span', { class: 'policy' }, '');
  private readonly queueBox = h('div', { class: 'queue', hidden: true });
  private readonly input = h('textarea', {
    class: 'prompt-input', rows: '3', placeholder: 'Message the agent (Enter to send, Shift+Enter for a new line)',
    'aria-label': 'Prompt',
  });
  private readonly backoff = new Backoff();
  private ws: WebSocket | null = null;
  private lastSeq = 0;
  private rpcIds = 0;
  private disposed = false;
  private identified = false;
  status = 'connecting';

  constructor(
    private readonly workspace: string,
    public sessionId: string | null,
    private readonly events: AgentEvents,
    private wantedAgentType: string | null = null,
  ) {
    this.transcript = new Transcript((id, optionId) => this.answerPermission(id, optionId));
    const button = (label: string, cls: string, title: string, action: () => void) => {
      const b = h('button', { type: 'button', class: cls, title }, label);
      b.addEventListener('click', action);
      return b;
    };
    const composer = h('div', { class: 'composer' }, this.input,
      h('div', { class: 'composer-buttons' },
        button('Send', 'primary send', 'Run now, or queue it when a prompt is running', () => this.submit('prompt')),
        button('Steer', 'steer', 'Redirect the running prompt with this message', () => this.submit('steer')),
        button('Follow-up', 'follow-up', 'Run after the current prompt and everything queued',
          () => this.submit('follow_up')),
        button('Abort', 'danger abort', 'Cancel the running prompt and clear the queue', () => this.abort())));
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit('prompt');
      }
    });
    this.element = h('section', { class: 'pane agent-pane' },
      h('div', { class: 'agent-head' }, this.agentLabel, this.statusPill, this.policyLabel),
      this.banner, this.transcript.element, this.queueBox, composer);
    this.setBanner('Connecting…', 'info');
  }

  mount(): void {
    this.connect();
  }

  focus(): void {
    this.input.focus();
  }

  dispose(): void {
    this.disposed = true;
    this.ws?.close(1000, 'tab closed');
    this.element.remove();
  }

  private connect(): void {
    const ws = new WebSocket(wsUrl('/agent/ws', {
      workspace: this.workspace, sessionId: this.sessionId, after: this.lastSeq || null,
      agentType: this.sessionId ? null : this.wantedAgentType,
    }));
    this.ws = ws;
    ws.onmessage = (event) => {
      let msg: Json;
      try {
        msg = JSON.parse(String(event.data)) as Json;
      } catch {
        return;
      }
      this.handle(msg);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.disposed) return;
      if (event.code === SESSION_DELETED) {
        // Deleted on the daemon: there is nothing to reconnect to.
        this.setBanner('This agent session was deleted.', 'error');
        this.element.dataset.state = 'deleted';
        return;
      }
      if (!this.identified) {
        // A new session the daemon refused (an unknown agent type, a limit): retrying would only
        // repeat the refusal, and a browser cannot read why a WebSocket handshake failed.
        this.refused();
        return;
      }
      this.setBanner('Connection lost — reconnecting…', 'warn');
      this.element.dataset.state = 'reconnecting';
      void this.reconnectLater();
    };
  }

  private refused(): void {
    const retry = h('button', { type: 'button' }, 'Retry');
    retry.addEventListener('click', () => {
      this.setBanner('Connecting…', 'info');
      this.connect();
    });
    const what = this.wantedAgentType ? `an agent session of type "${this.wantedAgentType}"` : 'the agent session';
    this.setBanner(`The daemon did not open ${what}. Check the agent type, then retry. `, 'error');
    this.banner.append(retry);
    this.element.dataset.state = 'refused';
  }

  private async reconnectLater(): Promise<void> {
    if (this.backoff.attempts >= 3 && !(await stillSignedIn())) {
      this.events.signedOut();
      return;
    }
    window.setTimeout(() => {
      if (!this.disposed) this.connect();
    }, this.backoff.next());
  }

  private send(message: object): boolean {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      this.transcript.note('Not connected: the message was not sent', 'error');
      return false;
    }
    this.ws.send(JSON.stringify(message));
    return true;
  }

  private handle(msg: Json): void {
    if (msg.type === 'session_state') return this.sessionState(msg);
    if (msg.type === 'session_replay_complete') {
      this.setBanner('', '');
      this.element.dataset.state = 'live';
      this.backoff.reset();
      return;
    }
    if (msg.type === 'pong') return;
    if (msg.type === 'response') return this.response(msg);
    if (msg.type === 'error') {
      this.transcript.note(`Error: ${String(msg.message ?? msg.error ?? 'request failed')}`, 'error');
      return;
    }
    if (typeof msg.seq === 'number') {
      if (msg.seq <= this.lastSeq) return; // already applied before a reconnect
      this.lastSeq = msg.seq;
    }
    if (msg.type === 'agent_status') this.setStatus(String(msg.status), String(msg.agentType ?? ''));
    // ready ⇄ prompting is told by the prompt's own start and end, not by agent_status.
    if (msg.type === 'session_prompting') this.setStatus('prompting', '');
    if (msg.type === 'session_prompt_done' && this.status === 'prompting') this.setStatus('ready', '');
    if (msg.type === 'queue_update') this.showQueue(Array.isArray(msg.queue) ? (msg.queue as Json[]) : []);
    if ('jsonrpc' in msg && 'error' in msg && msg.id === undefined) {
      this.transcript.note(`Error: ${String((msg.error as Json)?.message ?? 'request failed')}`, 'error');
      return;
    }
    this.transcript.apply(msg);
  }

  private sessionState(msg: Json): void {
    const last = Number(msg.lastSeq ?? 0);
    if (last < this.lastSeq) {
      // The daemon restarted and its history began again: start the page over from its log.
      this.transcript.clear();
      this.lastSeq = 0;
    }
    if (typeof msg.sessionId === 'string') this.sessionId = msg.sessionId;
    const agentType = String(msg.agentType ?? '');
    this.setStatus(String(msg.status ?? 'idle'), agentType);
    if (msg.error) this.transcript.note(`Agent error: ${String(msg.error)}`, 'error');
    this.setBanner(Number(msg.replayCount ?? 0) > 0 ? 'Loading history…' : '', 'info');
    if (!this.identified && this.sessionId) {
      this.identified = true;
      this.events.identified(this, this.sessionId, agentType);
    }
    if (this.wantedAgentType && this.wantedAgentType !== agentType) {
      this.send({ type: 'select_agent', agentType: this.wantedAgentType });
    }
    this.wantedAgentType = null;
    this.send({ type: 'get_state' });
  }

  private response(msg: Json): void {
    if (msg.success === false) {
      this.transcript.note(`${String(msg.command ?? 'request')} failed: ${String(msg.error ?? '')}`, 'error');
      return;
    }
    if (msg.command === 'get_state') {
      const state = (msg.data ?? {}) as Json;
      if (state.permissionPolicy) this.policyLabel.textContent = `permissions: ${String(state.permissionPolicy)}`;
      if (Array.isArray(state.queue)) this.showQueue(state.queue as Json[]);
    } else if (msg.command === 'select_agent' && typeof msg.agentType === 'string') {
      this.setStatus(this.status, msg.agentType);
    }
  }

  private submit(verb: 'prompt' | 'steer' | 'follow_up'): void {
    const text = this.input.value.trim();
    if (!text) return;
    const sent = verb === 'prompt'
      ? this.send({ jsonrpc: '2.0', id: `c${++this.rpcIds}`, method: 'session/prompt',
        params: { prompt: [{ type: 'text', text }] } })
      : this.send({ type: verb, message: text });
    if (sent) this.input.value = '';
  }

  private abort(): void {
    this.send({ type: 'abort' });
  }

  private answerPermission(id: string, optionId: string): void {
    this.send({ jsonrpc: '2.0', id, result: { outcome: { outcome: 'selected', optionId } } });
  }

  private setStatus(status: string, agentType: string): void {
    this.status = status;
    this.statusPill.textContent = status;
    this.statusPill.dataset.status = status;
    if (agentType) this.agentLabel.textContent = agentType;
    this.element.dataset.status = status;
  }

  private showQueue(queue: Json[]): void {
    this.queueBox.hidden = queue.length === 0;
    this.queueBox.replaceChildren(
      h('div', { class: 'queue-title' }, `Queued (${queue.length})`),
      ...queue.map((item, i) => h('div', { class: 'queue-item' }, `${i + 1}. `,
        item.kind && item.kind !== 'prompt' ? h('span', { class: 'badge' }, String(item.kind).replace('_', '-')) : null,
        truncate(String(item.text ?? ''), 160))),
    );
  }

  private setBanner(text: string, level: string): void {
    this.banner.textContent = text;
    this.banner.dataset.level = level;
    this.banner.hidden = text === '';
  }
}
