// A small progress bar for long host loops: redraws in place on a terminal; elsewhere (a log, CI) a line
// every LOG_EVERY_MS and the last, so that a short loop logs one line and a long one a few, not one a tick.

const LOG_EVERY_MS = 5000;

export class Progress {
  private readonly start = Date.now();
  private done = 0;
  private logged = Date.now();

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.draw('');
  }

  tick(note = ''): void {
    this.done += 1;
    this.draw(note);
    if (this.done === this.total && this.out.isTTY) this.out.write('\n');
  }

  private draw(note: string): void {
    const width = 28;
    const filled = Math.round((this.done / this.total) * width);
    const elapsed = (Date.now() - this.start) / 1000;
    const eta = this.done ? (elapsed / this.done) * (this.total - this.done) : 0;
    const line = `${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${this.done}/${this.total}  ${elapsed.toFixed(1)}s${this.done && this.done < this.total ? `, ~${eta.toFixed(0)}s left` : ''}  ${note}`;
    if (this.out.isTTY) this.out.write(`\r${line.padEnd(100)}`);
    else if (this.done === this.total || (this.done > 0 && Date.now() - this.logged >= LOG_EVERY_MS)) {
      this.logged = Date.now();
      this.out.write(`${line}\n`);
    }
  }
}
