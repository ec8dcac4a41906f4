// xterm.js's DOM renderer writes per-terminal CSS (theme colours, cell metrics, scrollbar) into
// <style> elements. The console's Content-Security-Policy has no 'unsafe-inline', and the browser
// checks every <style> element put into the page against it (even an empty one), so the terminal
// would lose its colours and cell layout and the console would log a violation per element.
// Constructed stylesheets are CSSOM, which the policy does not govern. So a "style element" asked
// for through document.createElement is an inert <template> stand-in instead: it sits where xterm
// puts it, its text goes into an adopted sheet, and removing it removes the sheet. (xterm only
// sets textContent on these elements and removes them; nothing reads them back as a sheet.)

export function routeStyleElementsToAdoptedSheets(doc: Document = document): void {
  if (!('adoptedStyleSheets' in doc) || typeof CSSStyleSheet.prototype.replaceSync !== 'function') return;
  const create = doc.createElement;
  doc.createElement = function createElement(tagName: string, options?: ElementCreationOptions) {
    if (tagName.toLowerCase() === 'style') return sheetBackedStandIn(doc, create.call(doc, 'template'));
    return create.call(doc, tagName, options);
  } as typeof doc.createElement;
}

function sheetBackedStandIn(doc: Document, element: HTMLElement): HTMLElement {
  const sheet = new CSSStyleSheet();
  let text = '';
  doc.adoptedStyleSheets = [...doc.adoptedStyleSheets, sheet];
  element.dataset.sheetFor = 'style';
  Object.defineProperty(element, 'textContent', {
    configurable: true,
    get: () => text,
    set: (value: string | null) => {
      text = value ?? '';
      sheet.replaceSync(text);
    },
  });
  const remove = element.remove.bind(element);
  element.remove = () => {
    doc.adoptedStyleSheets = doc.adoptedStyleSheets.filter((s) => s !== sheet);
    remove();
  };
  return element;
}
