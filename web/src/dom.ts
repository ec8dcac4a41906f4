// Tiny DOM helpers. Elements are built with createElement and textContent only: no innerHTML, so
// text from the server (terminal names, agent replies) can never become markup.

type Child = Node | string | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | boolean | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (name === 'class') el.className = String(value);
    else el.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

/** Keep a scrolled box pinned to its bottom while new content arrives, unless the user scrolled up. */
export function nearBottom(el: HTMLElement, slack = 40): boolean {
  return el.scrollHeight - el.scrollTop - el.clientHeight < slack;
}

export function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
