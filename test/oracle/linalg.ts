// Dense float64 linear algebra for the oracle: plain loops, no tricks, so that a reader can check it by eye.

/** A row-major float64 matrix: element (i, j) is `data[i * cols + j]`. */
export interface Matrix {
  rows: number;
  cols: number;
  data: Float64Array;
}

export function zeros(rows: number, cols: number): Matrix {
  return { rows, cols, data: new Float64Array(rows * cols) };
}

/** Builds a matrix from row vectors (all of the same length). */
export function fromRows(rows: ArrayLike<number>[], cols = rows[0]?.length ?? 0): Matrix {
  const m = zeros(rows.length, cols);
  rows.forEach((row, i) => {
    if (row.length !== cols) throw new Error(`fromRows: row ${i} has ${row.length} entries, expected ${cols}`);
    for (let j = 0; j < cols; j++) m.data[i * cols + j] = row[j];
  });
  return m;
}

export function row(m: Matrix, i: number): Float64Array {
  return m.data.slice(i * m.cols, (i + 1) * m.cols);
}

export function transpose(a: Matrix): Matrix {
  const t = zeros(a.cols, a.rows);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) t.data[j * a.rows + i] = a.data[i * a.cols + j];
  return t;
}

export function matmul(a: Matrix, b: Matrix): Matrix {
  if (a.cols !== b.rows) throw new Error(`matmul: [${a.rows}, ${a.cols}] x [${b.rows}, ${b.cols}]`);
  const c = zeros(a.rows, b.cols);
  for (let i = 0; i < a.rows; i++) {
    for (let k = 0; k < a.cols; k++) {
      const aik = a.data[i * a.cols + k];
      if (aik === 0) continue;
      for (let j = 0; j < b.cols; j++) c.data[i * b.cols + j] += aik * b.data[k * b.cols + j];
    }
  }
  return c;
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

export function norm(a: ArrayLike<number>): number {
  return Math.sqrt(dot(a, a));
}

/** Frobenius norm of a - b. */
export function frobeniusDistance(a: Matrix, b: Matrix): number {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += (a.data[i] - b.data[i]) ** 2;
  return Math.sqrt(s);
}

/** Thin SVD `A = U diag(sigma) Vᵀ`, k = min(rows, cols), sigma descending. */
export interface Svd {
  U: Matrix; // [rows, k]
  sigma: Float64Array; // [k]
  V: Matrix; // [cols, k]
}

/**
 * Exact thin SVD by one-sided (Hestenes) Jacobi: rotate column pairs of A until all are mutually
 * orthogonal; then the column norms are the singular values.
 * NOTE: it works on whichever of A, Aᵀ has fewer columns, since the cost is (columns)² per sweep.
 */
export function svd(a: Matrix): Svd {
  if (a.rows < a.cols) {
    const t = svd(transpose(a)); // Aᵀ = U Σ Vᵀ  =>  A = V Σ Uᵀ
    return { U: t.V, sigma: t.sigma, V: t.U };
  }
  if (a.rows > a.cols) {
    // QR first: A = Q R with R square, so the Jacobi sweeps run on k-long columns instead of n-long ones;
    // sweeping Rᵀ rather than R converges in fewer sweeps (Drmač & Veselić, "New fast and accurate Jacobi SVD").
    const { Q, R } = householderQr(a);
    const r = svd(transpose(R));
    return { U: matmul(Q, r.V), sigma: r.sigma, V: r.U };
  }
  const n = a.rows;
  const k = a.cols;
  // Columns as separate arrays: every inner loop walks one contiguous column.
  const w = Array.from({ length: k }, (_, j) => Float64Array.from({ length: n }, (_, i) => a.data[i * k + j]));
  const v = Array.from({ length: k }, (_, j) => Float64Array.from({ length: k }, (_, i) => (i === j ? 1 : 0)));
  jacobiSweeps(w, v);

  const sigma = w.map(norm);
  const order = sigma.map((_, j) => j).sort((x, y) => sigma[y] - sigma[x] || x - y);
  const U = zeros(n, k);
  const V = zeros(k, k);
  const s = new Float64Array(k);
  order.forEach((j, col) => {
    s[col] = sigma[j];
    // NOTE: a column with sigma exactly 0 has no direction; it is left 0 (it contributes nothing to U Σ Vᵀ).
    for (let i = 0; i < n; i++) U.data[i * k + col] = sigma[j] > 0 ? w[j][i] / sigma[j] : 0;
    for (let i = 0; i < k; i++) V.data[i * k + col] = v[j][i];
  });
  return { U, sigma: s, V };
}

/** Rotates column pairs of w (and the same rotation on v) until every pair is orthogonal to machine precision. */
function jacobiSweeps(w: Float64Array[], v: Float64Array[]): void {
  const tol = 1e-15;
  for (let sweep = 0; sweep < 100; sweep++) {
    // Squared column norms, refreshed each sweep and updated exactly per rotation in between.
    const sq = w.map((col) => dot(col, col));
    let rotated = false;
    for (let p = 0; p < w.length - 1; p++) {
      for (let q = p + 1; q < w.length; q++) {
        const gamma = dot(w[p], w[q]);
        if (gamma === 0 || Math.abs(gamma) <= tol * Math.sqrt(sq[p] * sq[q])) continue;
        rotated = true;
        // The rotation angle that zeroes the off-diagonal of the 2x2 Gram block [[sq_p, gamma], [gamma, sq_q]].
        const zeta = (sq[q] - sq[p]) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        rotate(w[p], w[q], c, c * t);
        rotate(v[p], v[q], c, c * t);
        sq[p] -= t * gamma;
        sq[q] += t * gamma;
      }
    }
    if (!rotated) return;
  }
  throw new Error('svd: one-sided Jacobi did not converge in 100 sweeps');
}

function rotate(x: Float64Array, y: Float64Array, c: number, s: number): void {
  for (let i = 0; i < x.length; i++) {
    const xi = x[i];
    const yi = y[i];
    x[i] = c * xi - s * yi;
    y[i] = s * xi + c * yi;
  }
}

/** Thin QR by Householder reflections: A [n, k] = Q [n, k] R [k, k], n >= k, Q with orthonormal columns. */
export function householderQr(a: Matrix): { Q: Matrix; R: Matrix } {
  const n = a.rows;
  const k = a.cols;
  const work = Float64Array.from(a.data); // becomes R in its top k rows
  const reflectors: Float64Array[] = []; // unit vectors u_j (entries j..n-1 used): H_j = I - 2 u_j u_jᵀ
  for (let j = 0; j < k; j++) {
    const u = new Float64Array(n);
    for (let i = j; i < n; i++) u[i] = work[i * k + j];
    const length = norm(u);
    // Reflect onto -sign(x_j)|x| e_j: adding with the sign of x_j avoids cancellation.
    u[j] += (u[j] >= 0 ? 1 : -1) * length;
    const uNorm = norm(u);
    if (uNorm > 0) for (let i = j; i < n; i++) u[i] /= uNorm;
    reflectors.push(u);
    applyReflector(u, work, n, k, j);
  }
  const R = zeros(k, k);
  for (let i = 0; i < k; i++) for (let j = i; j < k; j++) R.data[i * k + j] = work[i * k + j];
  // Q = H_0 H_1 ... H_{k-1} [I_k; 0], applied right to left.
  const q = new Float64Array(n * k);
  for (let i = 0; i < k; i++) q[i * k + i] = 1;
  for (let j = k - 1; j >= 0; j--) applyReflector(reflectors[j], q, n, k, 0);
  return { Q: { rows: n, cols: k, data: q }, R };
}

/** x <- (I - 2 u uᵀ) x for every column x of the row-major [n, k] matrix m, from column `fromCol` on. */
function applyReflector(u: Float64Array, m: Float64Array, n: number, k: number, fromCol: number): void {
  for (let c = fromCol; c < k; c++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += u[i] * m[i * k + c];
    if (s === 0) continue;
    for (let i = 0; i < n; i++) m[i * k + c] -= 2 * s * u[i];
  }
}
