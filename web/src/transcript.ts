// Renders an agent session's history (PROTOCOL.md §5.4) as a transcript: prompts, the streamed
// reply, thoughts, tool calls with their status, plans, retries, errors and permission requests.
// Messages are applied strictly in `seq` order, so a late joiner's replay and a live viewer end
// up with the same page.

import { h, nearBottom, truncate } from './dom';

export type Json = Record<string, unknown>;

export interface PermissionAnswer {
  (requestId: string, optionId: string): void;
}

// Glyphs from the basic symbol blocks (present in common system fonts; no emoji font needed).
const TOOL_GLYPH: Record<string, string> = {
  read: '≡', edit: '✎', delete: '✕', move: '⇄', search: '⊙', execute: '▶', think: '…', fetch: '↓',
};

function blockText(block: unknown): string {
  if (!block || typeof block !== 'object') return '';
  const b = block as Json;
  if (b.type === 'text') return String(b.text ?? '');
  if (b.type === 'resource_link') return `[${String(b.name ?? b.uri ?? 'link')}]`;
  if (b.type === 'resource') return '[resource]';
  return `[${String(b.type ?? 'content')}]`;
}

export function promptText(prompt: unknown): string {
  if (typeof prompt === 'string') return prompt;
  if (Array.isArray(prompt)) return prompt.map(blockText).join('');
  return blockText(prompt);
}

export class Transcript {
  readonly element = h('div', { class: 'transcript', 'aria-live': 'polite' });
  private reply: HTMLElement | null = null;
  private thought: HTMLElement | null = null;
  private readonly tools = new Map<string, HTMLElement>();
  private readonly permissions = new Map<string, HTMLElement>();
  private plan: HTMLElement | null = null;
  private readonly started = new Set<string>();

  constructor(private readonly answer: PermissionAnswer) {}

  clear(): void {
    this.element.replaceChildren();
    this.reply = this.thought = this.plan = null;
    this.tools.clear();
    this.permissions.clear();
    this.started.clear();
  }

  /** Apply one history message. */
  apply(msg: Json): void {
    const stick = nearBottom(this.element);
    this.render(msg);
    if (stick) this.element.scrollTop = this.element.scrollHeight;
  }

  private render(msg: Json): void {
    if (msg.method === 'session/update') return this.update(((msg.params as Json)?.update ?? {}) as Json);
    if (msg.method === 'permission/request') return this.permission(String(msg.id), (msg.params ?? {}) as Json);
    if ('jsonrpc' in msg && ('result' in msg || 'error' in msg)) {
      // A prompt's own result is also told by session_prompt_done; show only stray errors.
      if ('error' in msg && msg.promptId === undefined) {
        this.note(`Error: ${String(((msg.error ?? {}) as Json).message ?? 'request failed')}`, 'error');
      }
      return;
    }
    switch (msg.type) {
      case 'session_prompting':
        this.started.add(String(msg.promptId));
        this.endTurnParts();
        this.element.append(
          h('div', { class: `msg user kind-${String(msg.kind ?? 'prompt')}` },
            msg.kind && msg.kind !== 'prompt' ? h('span', { class: 'badge' }, String(msg.kind).replace('_', '-')) : null,
            promptText(msg.prompt)),
        );
        break;
      case 'session_prompt_done':
        this.endTurnParts();
        if (!this.started.delete(String(msg.promptId))) {
          // Never started (dropped from the queue) or merged into the running one (steer).
          if (msg.stopReason === 'cancelled') this.note('A queued prompt was cancelled before it ran', 'info');
        } else if (msg.stopReason && msg.stopReason !== 'end_turn') {
          const reason = msg.error ? `${String(msg.stopReason)}: ${String(msg.error)}` : String(msg.stopReason);
          this.note(`Prompt ended — ${reason}`, msg.stopReason === 'error' ? 'error' : 'info');
        }
        break;
      case 'prompt_retry':
        this.endTurnParts();
        this.note(
          `Provider error, retry ${String(msg.attempt)}/${String(msg.maxRetries)} in ${String(msg.delaySeconds)} s: ` +
            truncate(String(msg.error ?? ''), 300),
          'warn',
        );
        break;
      case 'agent_crash_report':
        this.endTurnParts();
        this.crash(msg);
        break;
      case 'agent_status':
        if (msg.status === 'error' && msg.error) this.note(`Agent error: ${String(msg.error)}`, 'error');
        break;
      case 'permission_resolved':
        this.resolved(String(msg.id), (msg.outcome ?? {}) as Json, String(msg.reason ?? ''));
        break;
      case 'steer_delivered':
        this.note('Steering delivered to the running prompt', 'info');
        break;
      case 'session_new':
        this.endTurnParts();
        this.note('New conversation started', 'info');
        break;
      case 'session_gap':
        this.note(`… ${Number(msg.to) - Number(msg.from) + 1} older messages were not kept …`, 'gap');
        break;
      default:
        break; // results of prompts, queue updates, unknown kinds: shown elsewhere or not at all
    }
  }

  private update(u: Json): void {
    const content = u.content;
    switch (u.sessionUpdate) {
      case 'agent_message_chunk':
        this.thought = null;
        if (!this.reply) {
          this.reply = h('div', { class: 'msg agent' });
          this.element.append(this.reply);
        }
        this.reply.append(blockText(content));
        break;
      case 'agent_thought_chunk':
        if (!this.thought) {
          this.thought = h('div', { class: 'msg thought' });
          this.element.append(this.thought);
        }
        this.thought.append(blockText(content));
        break;
      case 'user_message_chunk':
        this.element.append(h('div', { class: 'msg user' }, blockText(content)));
        break;
      case 'tool_call':
      case 'tool_call_update':
        this.endTurnParts();
        this.tool(u);
        break;
      case 'plan':
        this.showPlan(Array.isArray(u.entries) ? (u.entries as Json[]) : []);
        break;
      default:
        break; // available_commands_update, usage_update, session_info_update and future kinds
    }
  }

  /** A tool call is one compact line: icon, title, status; details fold out on click. */
  private tool(u: Json): void {
    const id = String(u.toolCallId ?? '');
    let row = this.tools.get(id);
    if (!row) {
      const glyph = TOOL_GLYPH[String(u.kind ?? '')] ?? '⚙';
      row = h('details', { class: 'tool' },
        h('summary', {}, h('span', { class: 'tool-glyph' }, glyph), h('span', { class: 'tool-title' }, 'tool call'),
          h('span', { class: 'tool-status' }, 'pending')),
        h('pre', { class: 'tool-detail', hidden: true }));
      this.tools.set(id, row);
      this.element.append(row);
    }
    if (u.title) row.querySelector('.tool-title')!.textContent = String(u.title);
    if (u.status) {
      row.querySelector('.tool-status')!.textContent = String(u.status).replace('_', ' ');
      row.dataset.status = String(u.status);
    }
    // Input and output arrive in any of the call's updates; each update replaces what it carries.
    const detail = row.querySelector<HTMLElement>('.tool-detail')!;
    const input = detail.querySelector<HTMLElement>('.tool-input') ?? detail.appendChild(h('div', { class: 'tool-input' }));
    const output = detail.querySelector<HTMLElement>('.tool-output') ?? detail.appendChild(h('div', { class: 'tool-output' }));
    if (u.rawInput !== undefined) input.textContent = `input: ${truncate(JSON.stringify(u.rawInput), 2000)}`;
    if (Array.isArray(u.content)) {
      const parts: string[] = [];
      for (const c of u.content as Json[]) {
        const inner = c.content !== undefined ? blockText(c.content) : c.type === 'diff' ? `diff ${String(c.path)}` : '';
        if (inner) parts.push(truncate(inner, 2000));
      }
      output.textContent = parts.join('\n');
    }
    detail.hidden = !input.textContent && !output.textContent;
  }

  private showPlan(entries: Json[]): void {
    if (!this.plan) {
      this.plan = h('div', { class: 'plan' });
      this.element.append(this.plan);
    }
    this.plan.replaceChildren(
      h('div', { class: 'plan-title' }, 'Plan'),
      ...entries.map((e) => h('div', { class: `plan-entry ${String(e.status ?? '')}` }, String(e.content ?? ''))),
    );
  }

  private permission(id: string, params: Json): void {
    this.endTurnParts();
    const call = (params.toolCall ?? {}) as Json;
    const options = Array.isArray(params.options) ? (params.options as Json[]) : [];
    const buttons = options.map((o) => {
      const kind = String(o.kind ?? '');
      const button = h('button', { type: 'button', class: kind.startsWith('allow') ? 'allow' : 'reject',
        'data-option': String(o.optionId) }, String(o.name ?? o.optionId));
      button.addEventListener('click', () => {
        for (const b of card.querySelectorAll('button')) b.disabled = true;
        card.querySelector('.perm-state')!.textContent = 'Answer sent…';
        this.answer(id, String(o.optionId));
      });
      return button;
    });
    const card = h('div', { class: 'permission', 'data-state': 'pending', 'data-request': id },
      h('div', { class: 'perm-title' }, 'Permission requested: ', h('strong', {}, String(call.title ?? 'tool call'))),
      h('div', { class: 'perm-options' }, ...buttons),
      h('div', { class: 'perm-state' }, 'Waiting for your answer'));
    this.permissions.set(id, card);
    this.element.append(card);
  }

  private resolved(id: string, outcome: Json, reason: string): void {
    const card = this.permissions.get(id);
    if (!card) return;
    card.dataset.state = 'resolved';
    for (const b of card.querySelectorAll('button')) b.disabled = true;
    let choice = 'cancelled';
    for (const b of card.querySelectorAll('button')) {
      if (outcome.outcome !== 'cancelled' && b.dataset.option === outcome.optionId) {
        b.classList.add('chosen');
        choice = b.textContent ?? String(outcome.optionId);
      }
    }
    if (reason === 'timeout') choice = `${choice} (no answer in time)`;
    card.querySelector('.perm-state')!.textContent = `Answered: ${choice}`;
  }

  private crash(msg: Json): void {
    const stderr = String(msg.stderr ?? '').trim();
    this.element.append(
      h('details', { class: 'note error crash' },
        h('summary', {}, `Agent crashed (exit ${String(msg.exitCode ?? '?')}): ${truncate(String(msg.error ?? ''), 200)}`),
        stderr ? h('pre', {}, truncate(stderr, 8192)) : null),
    );
  }

  note(text: string, level: string): void {
    this.element.append(h('div', { class: `note ${level}` }, text));
  }

  /** The next chunk of text starts a new bubble (after a tool call, a prompt, a permission). */
  private endTurnParts(): void {
    this.reply = null;
    this.thought = null;
  }
}
