// CSV of a table the page shows, downloaded from the browser (a Blob; nothing goes to the server).
// A cell a spreadsheet would read as a formula (starting with = + - @, a tab or a carriage return)
// is prefixed with a quote, so opening the file runs nothing.

const FORMULA = /^[=+\-@\t\r]/;

/** One CSV cell: quoted when it holds a comma, quote or line break; defused when it starts a formula. */
export function csvCell(value) {
  let s = value == null ? '' : String(value);
  if (FORMULA.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Rows (arrays of cells) as CSV text, CRLF line ends (RFC 4180). */
export function csvText(rows) {
  return rows.map((r) => r.map(csvCell).join(',')).join('\r\n') + '\r\n';
}

/** Offers `rows` as a CSV file named `name`. */
export function downloadCsv(name, rows) {
  const url = URL.createObjectURL(new Blob([csvText(rows)], { type: 'text/csv;charset=utf-8' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
