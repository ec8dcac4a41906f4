// The console page: who am I, which workspace, the tab strip, and one view per tab.
// It talks to the daemon only through its public API, like any other client.

import { AgentView } from './agent';
import { HttpError, listTabs, randomId, type Tab, type WhoAmI, whoami } from './api';
import { routeStyleElementsToAdoptedSheets } from './csp-styles';
import { h } from './dom';
import { TerminalHub, TerminalView } from './terminals';

routeStyleElementsToAdoptedSheets();

const KNOWN_AGENTS = ['pi', 'claude-code', 'pi-acp', 'openai-codex', 'google-gemini'];

interface Entry {
  id: string;
  type: 'terminal' | 'chat' | 'new-agent';
  button: HTMLElement;
  label: HTMLElement;
  pane: HTMLElement;
  view: TerminalView | AgentView | null;
}

class ConsoleApp {
  private readonly entries = new Map<string, Entry>();
  private readonly strip = document.getElementById('tabs')!;
  private readonly panes = document.getElementById('panes')!;
  private readonly hub: TerminalHub;
  private active: string | null = null;
  private terminalCount = 0;

  constructor(private readonly workspace: string) {
    this.hub = new TerminalHub(workspace, {
      renamed: (view, name) => this.setLabel(view.id, name),
      closed: (view) => this.forget(view.id),
      state: (view) => this.entries.get(view.id)?.button.setAttribute('data-state', view.state),
    });
    this.hub.onSignedOut = () => signedOut();
    document.getElementById('new-terminal')!.addEventListener('click', () => this.newTerminal());
    document.getElementById('new-agent')!.addEventListener('click', () => this.newAgent());
  }

  async start(): Promise<void> {
    await this.refreshTabs();
    const wanted = decodeURIComponent(window.location.hash.slice(1));
    if (this.entries.size === 0) this.newTerminal();
    else this.activate(this.entries.has(wanted) ? wanted : this.entries.keys().next().value!);
    window.addEventListener('focus', () => void this.refreshTabs());
    window.setInterval(() => void this.refreshTabs(), 15000);
  }

  /** Add tabs other clients created (a coordinator's agent session, another browser's terminal). */
  private async refreshTabs(): Promise<void> {
    let tabs: Tab[];
    try {
      tabs = await listTabs(this.workspace);
    } catch (err) {
      if (err instanceof HttpError && (err.status === 401 || err.status === 403)) signedOut();
      return;
    }
    for (const tab of tabs) {
      const entry = this.entries.get(tab.id);
      if (entry) {
        if (tab.label && entry.type !== 'new-agent') entry.label.textContent = tab.label;
      } else if (tab.type === 'terminal') {
        this.terminalCount += 1;
        this.addTerminal(tab.id, tab.label || `Terminal ${this.terminalCount}`, true);
      } else if (tab.type === 'chat') {
        this.addAgent(tab.id, tab.label || tab.agentId || 'agent');
      }
    }
  }

  private newTerminal(): void {
    this.terminalCount += 1;
    const id = randomId('term-');
    this.addTerminal(id, `Terminal ${this.terminalCount}`, false);
    this.activate(id);
  }

  private addTerminal(id: string, name: string, existing: boolean): void {
    const view = new TerminalView(this.hub, id, name, existing);
    const entry = this.addEntry(id, 'terminal', name, view.element, view);
    entry.label.title = 'Double-click to rename';
    entry.label.addEventListener('dblclick', () => this.editLabel(entry, (name) => view.rename(name)));
    view.mount();
  }

  private addAgent(id: string, label: string): AgentView {
    const view = this.agentView(id, null);
    this.addEntry(id, 'chat', label, view.element, view);
    view.mount();
    return view;
  }

  private agentView(sessionId: string | null, agentType: string | null): AgentView {
    return new AgentView(this.workspace, sessionId, {
      identified: (view, id, type) => this.agentIdentified(view, id, type),
      signedOut: () => signedOut(),
    }, agentType);
  }

  /** "+ Agent": a small form for the agent type, then a new session on /agent/ws. */
  private newAgent(): void {
    const id = randomId('new-agent-');
    const typeInput = h('input', {
      type: 'text', name: 'agentType', list: 'agent-types', placeholder: 'pi', 'aria-label': 'Agent type',
      autocomplete: 'off',
    });
    const form = h('form', { class: 'new-agent' },
      h('h2', {}, 'New agent session'),
      h('label', {}, 'Agent type ', typeInput),
      h('datalist', { id: 'agent-types' }, ...KNOWN_AGENTS.map((name) => h('option', { value: name }))),
      h('button', { type: 'submit', class: 'primary' }, 'Start'));
    const pane = h('section', { class: 'pane' }, form);
    const entry = this.addEntry(id, 'new-agent', 'New agent', pane, null);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const view = this.agentView(null, typeInput.value.trim() || null);
      entry.view = view;
      entry.type = 'chat';
      entry.button.className = 'tab tab-chat';
      entry.button.querySelector('.tab-close')?.remove();
      entry.label.textContent = typeInput.value.trim() || 'agent';
      pane.replaceWith(view.element);
      entry.pane = view.element;
      view.mount();
      view.focus();
    });
    this.activate(id);
    typeInput.focus();
  }

  private agentIdentified(view: AgentView, sessionId: string, agentType: string): void {
    for (const [key, entry] of this.entries) {
      if (entry.view === view && key !== sessionId) {
        const twin = this.entries.get(sessionId); // a tab refresh may have added it meanwhile
        if (twin) this.forget(sessionId);
        this.entries.delete(key);
        entry.id = sessionId;
        this.entries.set(sessionId, entry);
        entry.button.dataset.tab = sessionId;
        if (!entry.label.textContent || entry.label.textContent === 'agent') entry.label.textContent = agentType;
        if (this.active === key) this.activate(sessionId);
      }
    }
  }

  private addEntry(id: string, type: Entry['type'], text: string, pane: HTMLElement,
    view: Entry['view']): Entry {
    const label = h('span', { class: 'tab-label' }, text);
    const button = h('div', { class: `tab tab-${type}`, role: 'tab', tabindex: '0', 'data-tab': id }, label);
    const entry: Entry = { id, type, button, label, pane, view };
    if (type === 'terminal' || type === 'new-agent') {
      const close = h('button', { type: 'button', class: 'tab-close', title: 'Close', 'aria-label': 'Close tab' }, '×');
      close.addEventListener('click', (event) => {
        event.stopPropagation();
        if (entry.view instanceof TerminalView) entry.view.close();
        else this.forget(entry.id);
      });
      button.append(close);
    }
    button.addEventListener('click', () => this.activate(entry.id));
    button.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === ' ') this.activate(entry.id);
    });
    pane.hidden = true;
    this.strip.append(button);
    this.panes.append(pane);
    this.entries.set(id, entry);
    return entry;
  }

  private activate(id: string): void {
    const target = this.entries.get(id);
    if (!target) return;
    this.active = id;
    for (const entry of this.entries.values()) {
      const on = entry === target;
      entry.pane.hidden = !on;
      entry.button.setAttribute('aria-selected', String(on));
    }
    window.history.replaceState(null, '', `${window.location.pathname}${window.location.search}#${encodeURIComponent(id)}`);
    target.view?.focus();
  }

  private setLabel(id: string, text: string): void {
    const entry = this.entries.get(id);
    if (entry) entry.label.textContent = text;
  }

  private forget(id: string): void {
    const entry = this.entries.get(id);
    if (!entry) return;
    this.entries.delete(id);
    entry.button.remove();
    entry.pane.remove();
    if (entry.view instanceof AgentView) entry.view.dispose();
    if (this.active === id) {
      const next = this.entries.keys().next();
      if (!next.done) this.activate(next.value);
      else this.active = null;
    }
  }

  private editLabel(entry: Entry, commit: (name: string) => void): void {
    const input = h('input', { type: 'text', class: 'tab-rename', value: entry.label.textContent ?? '',
      'aria-label': 'Tab name', maxlength: '128' });
    let done = false;
    const finish = (save: boolean) => {
      if (done) return;
      done = true;
      const name = input.value.trim();
      input.replaceWith(entry.label);
      if (save && name && name !== entry.label.textContent) commit(name);
    };
    input.addEventListener('keydown', (event) => {
      event.stopPropagation();
      if (event.key === 'Enter') finish(true);
      if (event.key === 'Escape') finish(false);
    });
    input.addEventListener('blur', () => finish(true));
    entry.label.replaceWith(input);
    input.focus();
    input.select();
  }
}

function showPanel(...children: (Node | string)[]): void {
  document.getElementById('tabs')!.replaceChildren();
  document.body.dataset.mode = 'panel';
  document.getElementById('panes')!.replaceChildren(h('section', { class: 'panel' }, ...children));
}

/** Not (or no longer) signed in: explain how to get in, with a form that performs the ?token= login. */
let signedOutShown = false;

function signedOut(): void {
  if (signedOutShown) return;
  signedOutShown = true;
  const token = h('input', { type: 'password', name: 'token', placeholder: 'token', 'aria-label': 'Token',
    autocomplete: 'off', required: true });
  const workspace = new URLSearchParams(window.location.search).get('workspace');
  showPanel(
    h('h2', {}, 'Sign in to vm-agent'),
    h('p', {}, 'Open the link the daemon printed when it started (it ends in ', h('code', {}, '/?token=…'),
      '), or paste a token:'),
    h('form', { method: 'get', action: '/', class: 'login' }, token,
      workspace ? h('input', { type: 'hidden', name: 'workspace', value: workspace }) : null,
      h('button', { type: 'submit', class: 'primary' }, 'Sign in')),
  );
}

async function boot(): Promise<void> {
  let me: WhoAmI;
  try {
    me = await whoami();
  } catch (err) {
    if (err instanceof HttpError && (err.status === 401 || err.status === 403)) return signedOut();
    showPanel(h('h2', {}, 'The daemon did not answer'), h('p', {}, String(err)));
    return;
  }
  const query = new URLSearchParams(window.location.search);
  const workspace = me.workspaceId || query.get('workspace') || 'host';
  document.getElementById('who')!.textContent = `${me.userId} · ${workspace}`;
  document.body.dataset.mode = 'console';
  await new ConsoleApp(workspace).start();
}

void boot();
