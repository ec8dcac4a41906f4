// The daemon's public HTTP API as the console uses it, and small connection helpers.

export interface WhoAmI {
  userId: string;
  workspaceId: string | null;
  nodeId: string | null;
  kind: string;
  expiresAt: number | null;
}

export interface Tab {
  id: string;
  workspaceId: string;
  type: 'terminal' | 'chat';
  label: string;
  agentId: string | null;
  sortOrder: number;
  acpSessionId: string | null;
  lastPrompt: string | null;
}

export class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

export async function getJson<T>(path: string): Promise<T> {
  const response = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  if (!response.ok) {
    let body: { error?: string; message?: string } = {};
    try {
      body = await response.json();
    } catch {
      // not JSON: keep the status text
    }
    throw new HttpError(response.status, body.error ?? 'http_error', body.message ?? response.statusText);
  }
  return (await response.json()) as T;
}

export const whoami = (): Promise<WhoAmI> => getJson<WhoAmI>('/auth/whoami');

export async function listTabs(workspace: string): Promise<Tab[]> {
  const body = await getJson<{ tabs: Tab[] }>(`/workspaces/${encodeURIComponent(workspace)}/tabs`);
  return body.tabs;
}

/** A same-host WebSocket URL (the session cookie authenticates it; no token in the URL). */
export function wsUrl(path: string, params: Record<string, string | number | null | undefined>): string {
  const url = new URL(path, window.location.href);
  url.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = '';
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') url.searchParams.set(name, String(value));
  }
  return url.toString();
}

export function randomId(prefix: string): string {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Reconnect delays: quick at first (a blip), then backing off to a few seconds, with jitter. */
export class Backoff {
  private attempt = 0;

  get attempts(): number {
    return this.attempt;
  }

  next(): number {
    const base = Math.min(5000, 200 * 2 ** this.attempt);
    this.attempt += 1;
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** Is the login still good? Used after failed reconnects: a browser cannot see a WebSocket's 401. */
export async function stillSignedIn(): Promise<boolean> {
  try {
    await whoami();
    return true;
  } catch (err) {
    return !(err instanceof HttpError && (err.status === 401 || err.status === 403));
  }
}
