//! A byte-level GPT (GPT-2 architecture, llm.c style): token + position embeddings, pre-LN blocks
//! of causal self-attention and a GELU MLP, a final LayerNorm and a (tied or separate) LM head.
//!
//! Per block l, over N = B*T rows (residual stream `res` (N, C)):
//!   ln1 = LN(res);  qkv (N, 3C) = ln1 Wqkv^T;  atty (N, C) = attention(qkv);
//!   res2 = res + atty Wproj^T;  ln2 = LN(res2);  fch (N, 4C) = ln2 Wfc^T;  g = GELU(fch);
//!   res' = res2 + g Wfcproj^T.
//! Then lnf = LN(res_L); logits (N, V) = lnf wte^T (tied) or lnf Whead^T; loss = mean CE.
use crate::activation::{gelu_backward_from_output, gelu_backward_par, gelu_forward_par};
use crate::attention::{AttnCache, AttnShape, attention_backward_qkv, attention_forward_qkv};
use crate::attn_panels::{self, AttnBufs, AttnSaved};
use crate::embedding::Embedding;
use crate::error::{invalid, shape};
use crate::flops::{Flops, StepFlops};
use crate::kernels::{GemmThreads, gemm_nx, transpose};
use crate::layernorm::LayerNorm;
use crate::loss::{cross_entropy_backward, cross_entropy_forward_par};
use crate::panels::{self, MlpBufs, MlpSaved};
use crate::precision::{Precision, round_into, widen_into};
use crate::util::{add_into_par, aligned, aligned_ref, ensure};
use crate::{Linear, ParamMut, Result};
use lopper_tensor::bf16;
use lopper_tensor::{MatRef, Par, Transpose};

/// GPT hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GptConfig {
    /// Vocabulary size (256 for bytes).
    pub vocab: usize,
    /// Maximum context length (rows of the position embedding).
    pub ctx: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Model width C (a multiple of `heads`).
    pub width: usize,
    /// LM head shares the token embedding (GPT-2) when true.
    pub tie_weights: bool,
    /// Seed of the deterministic initialization.
    pub seed: u64,
}

impl Default for GptConfig {
    /// The tiny GPT of the benchmarks: bytes, context 128, 4 layers, 4 heads, width 256, tied.
    fn default() -> Self {
        GptConfig {
            vocab: 256,
            ctx: 128,
            layers: 4,
            heads: 4,
            width: 256,
            tie_weights: true,
            seed: 0,
        }
    }
}

impl GptConfig {
    /// The number of parameters (weights and biases, LayerNorm included); `None` when it
    /// overflows `usize`.
    pub fn params(&self) -> Option<usize> {
        let c = self.width;
        let m = |a: usize, b: usize| a.checked_mul(b);
        // per block: qkv 3C*C + 3C, proj C*C + C, fc 4C*C + 4C, mlp.proj 4C*C + C, two LayerNorms 4C
        let block = m(m(c, c)?, 12)?.checked_add(m(c, 13)?)?;
        let head = if self.tie_weights {
            0
        } else {
            m(self.vocab, c)?
        };
        m(block, self.layers)?
            .checked_add(m(self.vocab, c)?)?
            .checked_add(m(self.ctx, c)?)?
            .checked_add(m(c, 2)?)?
            .checked_add(head)
    }
}

struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ln2: LayerNorm,
    fc: Linear,
    fc_proj: Linear,
}

#[derive(Default)]
struct BlockActs {
    ln1: Vec<f32>,
    ln1_mean: Vec<f32>,
    ln1_rstd: Vec<f32>,
    qkv: Vec<f32>,
    atty: Vec<f32>,
    attn: AttnCache,
    res2: Vec<f32>,
    ln2: Vec<f32>,
    ln2_mean: Vec<f32>,
    ln2_rstd: Vec<f32>,
    fch: Vec<f32>,
    gelu: Vec<f32>,
    /// The MLP ran on panels (fch, gelu and ln2t hold (4C, N), (4C, N) and ln2^T (C, N) panel-major,
    /// from a 64-byte boundary: see `panels::MlpSaved`).
    fm: bool,
    ln2t: Vec<f32>,
    /// The attention half ran on sequence panels (ln1t, qkv and atty hold ln1^T (C, N), qkv^T
    /// (3C, N) and y^T (C, N) sequence-major, from a 64-byte boundary: see
    /// `attn_panels::AttnSaved`).
    fa: bool,
    ln1t: Vec<f32>,
    /// bf16 mode: qkv and fch saved as bf16 (ln1, atty, ln2 and gelu are saved by the Linear
    /// layers that read them; the f32 buffers above stay empty).
    qkv_b: Vec<bf16>,
    fch_b: Vec<bf16>,
}

/// bf16 mode: the f32 activations of the block being computed, shared by all blocks.
#[derive(Default)]
struct Transient {
    ln1: Vec<f32>,
    qkv: Vec<f32>,
    atty: Vec<f32>,
    ln2: Vec<f32>,
    fch: Vec<f32>,
    gelu: Vec<f32>,
}

#[derive(Default)]
struct Acts {
    b: usize,
    t: usize,
    tokens: Vec<u32>,
    targets: Vec<u32>,
    pos: Vec<u32>,
    res: Vec<Vec<f32>>,
    blocks: Vec<BlockActs>,
    lnf: Vec<f32>,
    lnf_mean: Vec<f32>,
    lnf_rstd: Vec<f32>,
    logits: Vec<f32>,
    probs: Vec<f32>,
    // backward scratch
    dres: Vec<f32>,
    dc: Vec<f32>,
    dc2: Vec<f32>,
    d3c: Vec<f32>,
    d4c: Vec<f32>,
    d4c2: Vec<f32>,
    dlogits: Vec<f32>,
    dlogits_t: Vec<f32>,
    /// Per-part buffers of the MLPs on panels.
    mlp: Vec<MlpBufs>,
    /// Per-part buffers of the attention halves on sequence panels.
    attn: Vec<AttnBufs>,
    tr: Transient,
}

/// A GPT with explicit forward and backward. `forward(tokens, targets)` returns the mean loss and
/// keeps the activations; `backward()` accumulates every parameter gradient.
pub struct Gpt {
    cfg: GptConfig,
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    lnf: LayerNorm,
    lm_head: Option<Linear>,
    par: Par,
    loop_par: Par,
    threads: GemmThreads,
    feature_major: bool,
    precision: Precision,
    a: Acts,
    ready: bool,
}

impl Gpt {
    /// A GPT initialized as GPT-2 (N(0, 0.02^2), residual projections scaled by 1/sqrt(2 layers),
    /// zero biases, unit LayerNorm), deterministic in `cfg.seed`.
    pub fn new(cfg: GptConfig) -> Result<Gpt> {
        if cfg.heads == 0
            || cfg.width == 0
            || !cfg.width.is_multiple_of(cfg.heads)
            || cfg.vocab == 0
            || cfg.ctx == 0
        {
            return Err(invalid(
                "gpt",
                format!(
                    "bad config {cfg:?}: width must be a positive multiple of heads, vocab and ctx > 0"
                ),
            ));
        }
        // weights and gradients (2 floats each) of sizes given as numbers: refused when they
        // cannot fit, never an abort
        let what = format!("gpt {cfg:?}: weights and gradients");
        let params = cfg.params().ok_or_else(|| {
            lopper_tensor::Error::Memory(format!("{what}: the parameter count overflows"))
        })?;
        lopper_tensor::mem::check_bytes(&what, params, 8)?;
        let (c, s) = (cfg.width, cfg.seed.wrapping_mul(1000));
        let pstd = 0.02 / (2.0 * cfg.layers.max(1) as f32).sqrt();
        let blocks = (0..cfg.layers)
            .map(|l| {
                let p = |n: &str| format!("h.{l}.{n}");
                let sd = s + 10 + 10 * l as u64;
                Block {
                    ln1: LayerNorm::new(&p("ln_1"), c),
                    qkv: Linear::new(&p("attn.qkv"), c, 3 * c, true, 0.02, sd),
                    proj: Linear::new(&p("attn.proj"), c, c, true, pstd, sd + 1),
                    ln2: LayerNorm::new(&p("ln_2"), c),
                    fc: Linear::new(&p("mlp.fc"), c, 4 * c, true, 0.02, sd + 2),
                    fc_proj: Linear::new(&p("mlp.proj"), 4 * c, c, true, pstd, sd + 3),
                }
            })
            .collect();
        Ok(Gpt {
            cfg,
            wte: Embedding::new("wte", cfg.vocab, c, 0.02, s + 1),
            wpe: Embedding::new("wpe", cfg.ctx, c, 0.01, s + 2),
            blocks,
            lnf: LayerNorm::new("ln_f", c),
            lm_head: (!cfg.tie_weights)
                .then(|| Linear::new("lm_head", c, cfg.vocab, false, 0.02, s + 3)),
            par: Par::rayon(),
            loop_par: Par::rayon(),
            threads: GemmThreads::default(),
            feature_major: true,
            precision: Precision::F32,
            a: Acts::default(),
            ready: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// Sets the parallelism of every product.
    pub fn set_par(&mut self, par: Par) {
        self.par = par;
        for l in self.linears_mut() {
            l.set_par(par);
        }
    }

    /// How dense products use several threads (default [`GemmThreads::Slabs`]: one rayon pool
    /// for everything).
    pub fn set_gemm_threads(&mut self, how: GemmThreads) {
        self.threads = how;
        for l in self.linears_mut() {
            l.set_gemm_threads(how);
        }
    }

    /// Sets the storage precision of every Linear and of the activations saved for the backward
    /// (see [`Precision`]): with `Bf16` the blocks' saved activations are bf16 (the Linear layers
    /// keep their bf16 inputs; qkv and the MLP's pre-activation are kept as bf16 here), the
    /// residual stream, LayerNorm statistics, attention probabilities, embeddings and the LM head
    /// stay f32, and MLPs run row-major. Activations are reallocated at the next forward.
    pub fn set_precision(&mut self, p: Precision) {
        self.precision = p;
        for l in self.linears_mut() {
            l.set_precision(p);
        }
        self.a.b = 0; // re-run alloc for the new layout
        self.ready = false;
    }

    /// The storage precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Bytes of the activations kept from a forward for the backward (per-block buffers,
    /// attention probabilities, the Linear layers' saved inputs, the residual stream, logits).
    pub fn saved_activation_bytes(&self) -> usize {
        let a = &self.a;
        let f = |v: &Vec<f32>| v.len() * 4;
        let mut total: usize = a.res.iter().map(f).sum::<usize>() + f(&a.lnf) + f(&a.probs);
        for ba in &a.blocks {
            total += [
                &ba.ln1, &ba.qkv, &ba.atty, &ba.res2, &ba.ln2, &ba.fch, &ba.gelu, &ba.ln2t,
                &ba.ln1t,
            ]
            .into_iter()
            .map(f)
            .sum::<usize>()
                + 4 * (ba.ln1_mean.len()
                    + ba.ln1_rstd.len()
                    + ba.ln2_mean.len()
                    + ba.ln2_rstd.len())
                + 2 * (ba.qkv_b.len() + ba.fch_b.len())
                + ba.attn.bytes();
        }
        total + self.linears().map(Linear::saved_bytes).sum::<usize>()
    }

    /// Whether a block whose two MLP layers are both sparse (Csr or 2:4, f32) runs its MLP whole
    /// per panel of 128 rows (`fc`, GELU and `mlp.proj` on feature-major (features, 128) panels that
    /// stay in cache: one transpose of the panel each way instead of one per sparse product and
    /// operand), and whether a block whose qkv and attention proj are both sparse runs its attention
    /// half per sequence on feature-major panels (`attn_panels`). Default: true; false runs these
    /// layers row-major.
    pub fn set_feature_major(&mut self, on: bool) {
        self.feature_major = on;
    }

    /// Sets the parallelism of the loops around the products (attention's (batch, head) pairs,
    /// GELU). Default: the rayon pool. (faer's GEMMs run on their own thread pool; on the loaded
    /// 2-core machine `Par::Seq` here measured no better, within the noise.)
    pub fn set_loop_par(&mut self, par: Par) {
        self.loop_par = par;
        self.lnf.set_par(par);
        for b in &mut self.blocks {
            b.ln1.set_par(par);
            b.ln2.set_par(par);
        }
    }

    /// Every Linear layer with its name (`h.0.attn.qkv`, `h.0.attn.proj`, `h.0.mlp.fc`,
    /// `h.0.mlp.proj`, ..., and `lm_head` when untied), to change weight kinds.
    pub fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        self.blocks
            .iter_mut()
            .flat_map(|b| [&mut b.qkv, &mut b.proj, &mut b.fc, &mut b.fc_proj])
            .chain(self.lm_head.as_mut())
    }

    /// Every Linear layer, shared.
    pub fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.blocks
            .iter()
            .flat_map(|b| [&b.qkv, &b.proj, &b.fc, &b.fc_proj])
            .chain(self.lm_head.as_ref())
    }

    /// Every trainable parameter with its gradient (names as in GPT-2: `wte.weight`,
    /// `h.0.ln_1.weight`, `h.0.attn.qkv.weight`, ...).
    pub fn params(&mut self) -> Vec<ParamMut<'_>> {
        let mut out = Vec::new();
        self.wte.params(&mut out);
        self.wpe.params(&mut out);
        for b in &mut self.blocks {
            b.ln1.params(&mut out);
            b.qkv.params(&mut out);
            b.proj.params(&mut out);
            b.ln2.params(&mut out);
            b.fc.params(&mut out);
            b.fc_proj.params(&mut out);
        }
        self.lnf.params(&mut out);
        if let Some(h) = &mut self.lm_head {
            h.params(&mut out);
        }
        out
    }

    /// Copies `values` into the parameter called `name` (e.g. to load weights).
    pub fn set_param(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let mut ps = self.params();
        let p = ps
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| invalid("gpt", format!("no parameter {name}")))?;
        if p.values.len() != values.len() {
            return Err(shape(
                name,
                format!(
                    "{} values for a parameter of {}",
                    values.len(),
                    p.values.len()
                ),
            ));
        }
        p.values.copy_from_slice(values);
        Ok(())
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self) {
        self.wte.zero_grad();
        self.wpe.zero_grad();
        for b in &mut self.blocks {
            b.ln1.zero_grad();
            b.qkv.zero_grad();
            b.proj.zero_grad();
            b.ln2.zero_grad();
            b.fc.zero_grad();
            b.fc_proj.zero_grad();
        }
        self.lnf.zero_grad();
        if let Some(h) = &mut self.lm_head {
            h.zero_grad();
        }
    }

    /// Logits (B*T, V) of the last forward.
    pub fn logits(&self) -> &[f32] {
        &self.a.logits
    }

    /// FLOPs of one forward + backward at batch `b`, context `t` (linears, attention, LM head).
    pub fn flops(&self, b: usize, t: usize) -> StepFlops {
        let n = b * t;
        let mut f = StepFlops::default();
        for l in self.linears() {
            f += l.flops(n);
        }
        let att = AttnShape {
            b,
            t,
            c: self.cfg.width,
            heads: self.cfg.heads,
            par: self.loop_par,
        }
        .flops();
        for _ in 0..self.cfg.layers {
            f += att;
        }
        if self.lm_head.is_none() {
            let d = 2 * (n * self.cfg.width * self.cfg.vocab) as u64;
            f += StepFlops {
                forward: Flops::same(d),
                backward: Flops::same(2 * d),
            };
        }
        f
    }

    /// An error when the activations of a (B, T) batch cannot fit in memory, before allocating
    /// them. A lower bound, so that no batch that fits is refused: per token the residual stream
    /// around every block, per block 4 C of saved buffers (f32 or bf16) and the attention row, and
    /// the logits.
    fn check_activations(&self, b: usize, t: usize) -> Result<()> {
        let (c, l) = (self.cfg.width as u128, self.cfg.layers as u128);
        let per_token =
            (l + 1) * c + l * (4 * c + self.cfg.heads as u128 * t as u128) + self.cfg.vocab as u128;
        let floats = per_token * b as u128 * t as u128;
        let what = format!("gpt: activations of a {b}x{t} batch");
        let floats = usize::try_from(floats).map_err(|_| {
            lopper_tensor::Error::Memory(format!("{what}: {floats} floats overflow usize"))
        })?;
        lopper_tensor::mem::check_bytes(&what, floats, 4)?;
        Ok(())
    }

    fn alloc(&mut self, b: usize, t: usize) {
        let (c, v, n) = (self.cfg.width, self.cfg.vocab, b * t);
        let a = &mut self.a;
        a.b = b;
        a.t = t;
        a.res.resize_with(self.cfg.layers + 1, Vec::new);
        for r in &mut a.res {
            ensure(r, n * c);
        }
        a.blocks.resize_with(self.cfg.layers, BlockActs::default);
        let bf = self.precision == Precision::Bf16;
        // bf16: one set of transient f32 buffers instead of one per block
        let per_block = if bf { 0 } else { n };
        let tr = &mut a.tr;
        for (buf, w) in [
            (&mut tr.ln1, c),
            (&mut tr.qkv, 3 * c),
            (&mut tr.atty, c),
            (&mut tr.ln2, c),
            (&mut tr.fch, 4 * c),
            (&mut tr.gelu, 4 * c),
        ] {
            *buf = if bf { vec![0.0; n * w] } else { Vec::new() };
        }
        for ba in &mut a.blocks {
            for (buf, w) in [
                (&mut ba.ln1, c),
                (&mut ba.qkv, 3 * c),
                (&mut ba.atty, c),
                (&mut ba.ln2, c),
                (&mut ba.fch, 4 * c),
                (&mut ba.gelu, 4 * c),
            ] {
                if per_block == 0 {
                    *buf = Vec::new(); // free the f32 copies
                } else {
                    ensure(buf, per_block * w);
                }
            }
            ensure(&mut ba.res2, n * c);
            ba.ln2t = Vec::new();
            ba.ln1t = Vec::new();
            ba.qkv_b = Vec::new();
            ba.fch_b = Vec::new();
            for buf in [
                &mut ba.ln1_mean,
                &mut ba.ln1_rstd,
                &mut ba.ln2_mean,
                &mut ba.ln2_rstd,
            ] {
                ensure(buf, n);
            }
        }
        for (buf, w) in [
            (&mut a.lnf, c),
            (&mut a.dres, c),
            (&mut a.dc, c),
            (&mut a.dc2, c),
            (&mut a.d3c, 3 * c),
            (&mut a.d4c, 4 * c),
            (&mut a.d4c2, 4 * c),
            (&mut a.logits, v),
            (&mut a.probs, v),
            (&mut a.dlogits, v),
            (&mut a.dlogits_t, v),
        ] {
            ensure(buf, n * w);
        }
        ensure(&mut a.lnf_mean, n);
        ensure(&mut a.lnf_rstd, n);
        a.pos = (0..n).map(|i| (i % t) as u32).collect();
    }

    /// Runs the model on `tokens` (B*T, row-major by batch) and returns the mean cross-entropy
    /// against `targets` (B*T). Activations are kept for [`Gpt::backward`].
    pub fn forward(&mut self, tokens: &[u32], targets: &[u32], b: usize, t: usize) -> Result<f32> {
        let (c, v) = (self.cfg.width, self.cfg.vocab);
        if t == 0 || t > self.cfg.ctx {
            return Err(invalid(
                "gpt",
                format!("context {t} must be in 1..={}", self.cfg.ctx),
            ));
        }
        // an empty batch has no mean loss (it returned 0, and the backward after it panicked)
        if b == 0 {
            return Err(invalid("gpt", "batch size B must be at least 1"));
        }
        // saturating: a B*T that overflows matches no token buffer (wrapped, 2^63 * 2 matched an
        // empty one; usize::MAX u32s fit in no slice)
        let n = b.saturating_mul(t);
        if tokens.len() != n || targets.len() != n {
            return Err(shape(
                "gpt",
                format!(
                    "{} tokens and {} targets for B*T = {b}*{t}",
                    tokens.len(),
                    targets.len()
                ),
            ));
        }
        if self.a.b != b || self.a.t != t || self.a.res.is_empty() {
            self.check_activations(b, t)?;
            self.alloc(b, t);
        }
        self.ready = false;
        let a = &mut self.a;
        a.tokens.clear();
        a.tokens.extend_from_slice(tokens);
        a.targets.clear();
        a.targets.extend_from_slice(targets);
        self.wte.forward(tokens, &mut a.res[0])?; // res0 (N, C) = wte[tokens] + wpe[pos]
        self.wpe.forward_add(&a.pos, &mut a.res[0])?;
        let sh = AttnShape {
            b,
            t,
            c,
            heads: self.cfg.heads,
            par: self.loop_par,
        };
        let bf = self.precision == Precision::Bf16;
        for (l, blk) in self.blocks.iter_mut().enumerate() {
            let (before, after) = a.res.split_at_mut(l + 1);
            let (res, out) = (&before[l], &mut after[0]);
            let ba = &mut a.blocks[l];
            // the MLP on panels (both layers Csr or 2:4, f32), else row-major
            let fm =
                !bf && self.feature_major && blk.fc.panel_native() && blk.fc_proj.panel_native();
            ba.fm = fm;
            if !bf && !fm {
                // exact lengths again after a step on panels (which pads them for alignment)
                ensure(&mut ba.fch, n * 4 * c);
                ensure(&mut ba.gelu, n * 4 * c);
            }
            // the attention half on sequence panels (qkv and proj Csr or 2:4, f32)
            let fa = !bf && self.feature_major && blk.qkv.panel_native() && blk.proj.panel_native();
            ba.fa = fa;
            if !bf && !fa {
                ensure(&mut ba.qkv, n * 3 * c);
                ensure(&mut ba.atty, n * c);
            }
            let tr = &mut a.tr;
            let (ln1, qkv, atty, ln2, fch, gelu) = if bf {
                let t = tr;
                (
                    &mut t.ln1,
                    &mut t.qkv,
                    &mut t.atty,
                    &mut t.ln2,
                    &mut t.fch,
                    &mut t.gelu,
                )
            } else {
                (
                    &mut ba.ln1,
                    &mut ba.qkv,
                    &mut ba.atty,
                    &mut ba.ln2,
                    &mut ba.fch,
                    &mut ba.gelu,
                )
            };
            blk.ln1
                .forward(res, n, ln1, &mut ba.ln1_mean, &mut ba.ln1_rstd)?;
            if fa {
                // ln1^T, qkv^T and y^T saved sequence-major (see attn_panels::AttnSaved)
                let saved = AttnSaved {
                    xt: aligned(&mut ba.ln1t, n * c),
                    qkvt: aligned(qkv, n * 3 * c),
                    yt: aligned(atty, n * c),
                };
                let (q, p) = (&blk.qkv, &blk.proj);
                let (cache, out) = (&mut ba.attn, &mut ba.res2);
                attn_panels::attn_forward(q, p, ln1, sh, saved, cache, out, &mut a.attn, self.par)?;
            } else {
                blk.qkv.forward(ln1, n, qkv)?; // qkv (N, 3C)
                attention_forward_qkv(qkv, sh, atty, &mut ba.attn)?; // atty (N, C)
                if bf {
                    round_into(qkv, &mut ba.qkv_b);
                }
                blk.proj.forward(atty, n, &mut ba.res2)?;
            }
            add_into_par(&mut ba.res2, res, self.loop_par); // res2 = res + proj(atty)
            blk.ln2
                .forward(&ba.res2, n, ln2, &mut ba.ln2_mean, &mut ba.ln2_rstd)?;
            if fm {
                // ln2^T, fch and gelu saved panel-major (see panels::MlpSaved)
                let saved = MlpSaved {
                    xt: aligned(&mut ba.ln2t, n * c),
                    h: aligned(fch, n * 4 * c),
                    g: aligned(gelu, n * 4 * c),
                };
                let (fc, proj) = (&blk.fc, &blk.fc_proj);
                panels::mlp_forward(fc, proj, ln2, n, saved, out, &mut a.mlp, self.par)?;
            } else {
                blk.fc.forward(ln2, n, fch)?; // fch (N, 4C)
                gelu_forward_par(fch, gelu, self.loop_par)?;
                if bf {
                    round_into(fch, &mut ba.fch_b);
                }
                blk.fc_proj.forward(gelu, n, out)?;
            }
            add_into_par(out, &ba.res2, self.loop_par); // res' = res2 + fc_proj(gelu)
        }
        let last = &a.res[self.cfg.layers];
        self.lnf
            .forward(last, n, &mut a.lnf, &mut a.lnf_mean, &mut a.lnf_rstd)?;
        match &mut self.lm_head {
            None => gemm_nx(
                &mut a.logits,
                &a.lnf,
                MatRef::new(&self.wte.w, v, c)?,
                Transpose::Yes,
                n,
                c,
                1.0,
                0.0,
                self.par,
                self.threads,
            )?, // logits (N, V) = lnf wte^T
            Some(h) => h.forward(&a.lnf, n, &mut a.logits)?,
        }
        let loss = cross_entropy_forward_par(&a.logits, targets, v, &mut a.probs, self.loop_par)?;
        self.ready = true;
        Ok(loss)
    }

    /// Backward of the last forward: every parameter gradient `+=` (call [`Gpt::zero_grad`] first).
    pub fn backward(&mut self) -> Result<()> {
        if !self.ready {
            return Err(invalid("gpt", "backward without a successful forward"));
        }
        let (c, v) = (self.cfg.width, self.cfg.vocab);
        let a = &mut self.a;
        let n = a.b * a.t;
        let sh = AttnShape {
            b: a.b,
            t: a.t,
            c,
            heads: self.cfg.heads,
            par: self.loop_par,
        };
        cross_entropy_backward(&a.probs, &a.targets, v, &mut a.dlogits)?; // dlogits (N, V)
        match &mut self.lm_head {
            None => {
                transpose(&a.dlogits, n, v, &mut a.dlogits_t, self.par); // (V, N)
                gemm_nx(
                    &mut self.wte.dw,
                    &a.dlogits_t,
                    MatRef::new(&a.lnf, n, c)?,
                    Transpose::No,
                    v,
                    n,
                    1.0,
                    1.0,
                    self.par,
                    self.threads,
                )?; // dwte (V, C) += dlogits^T lnf
                gemm_nx(
                    &mut a.dc,
                    &a.dlogits,
                    MatRef::new(&self.wte.w, v, c)?,
                    Transpose::No,
                    n,
                    v,
                    1.0,
                    0.0,
                    self.par,
                    self.threads,
                )?; // dlnf (N, C) = dlogits wte
            }
            Some(h) => h.backward(&a.lnf, &a.dlogits, n, &mut a.dc)?,
        }
        self.lnf.backward(
            &a.res[self.cfg.layers],
            &a.dc,
            &a.lnf_mean,
            &a.lnf_rstd,
            n,
            &mut a.dres,
        )?; // dres (N, C)
        let bf = self.precision == Precision::Bf16;
        for (l, blk) in self.blocks.iter_mut().enumerate().rev() {
            let ba = &mut a.blocks[l];
            let tr = &mut a.tr;
            if bf {
                // the transient buffers ln1, atty, ln2 and gelu are only read for their shapes
                // (the Linear layers use their saved bf16 inputs)
                widen_into(&ba.qkv_b, &mut tr.qkv);
                widen_into(&ba.fch_b, &mut tr.fch);
            }
            let (ln1, qkv, atty, ln2, fch, gelu) = if bf {
                (&tr.ln1, &tr.qkv, &tr.atty, &tr.ln2, &tr.fch, &tr.gelu)
            } else {
                (&ba.ln1, &ba.qkv, &ba.atty, &ba.ln2, &ba.fch, &ba.gelu)
            };
            // res' = res2 + fc_proj(gelu): d res2 = dres (kept in dres), d gelu below
            if ba.fm {
                let saved = (
                    aligned_ref(&ba.ln2t, n * c),
                    aligned_ref(fch, n * 4 * c),
                    aligned_ref(gelu, n * 4 * c),
                );
                let (fc, proj) = (&mut blk.fc, &mut blk.fc_proj);
                panels::mlp_backward(fc, proj, saved, &a.dres, n, &mut a.dc, &mut a.mlp, self.par)?;
            } else {
                blk.fc_proj.backward(gelu, &a.dres, n, &mut a.d4c)?;
                if bf {
                    // gelu is a transient here (the Linear keeps its bf16 copy): recompute
                    gelu_backward_par(fch, &a.d4c, &mut a.d4c2, self.loop_par)?;
                } else {
                    gelu_backward_from_output(fch, gelu, &a.d4c, &mut a.d4c2, self.loop_par)?;
                }
                blk.fc.backward(ln2, &a.d4c2, n, &mut a.dc)?;
            }
            blk.ln2
                .backward(&ba.res2, &a.dc, &ba.ln2_mean, &ba.ln2_rstd, n, &mut a.dc2)?;
            add_into_par(&mut a.dres, &a.dc2, self.loop_par); // dres2 = dres + LN2 backward
            // res2 = res + proj(atty)
            if ba.fa {
                let saved = (
                    aligned_ref(&ba.ln1t, n * c),
                    aligned_ref(qkv, n * 3 * c),
                    aligned_ref(atty, n * c),
                );
                let (q, p) = (&mut blk.qkv, &mut blk.proj);
                let dx = &mut a.dc;
                attn_panels::attn_backward(
                    q,
                    p,
                    saved,
                    &ba.attn,
                    &a.dres,
                    sh,
                    dx,
                    &mut a.attn,
                    self.par,
                )?;
            } else {
                blk.proj.backward(atty, &a.dres, n, &mut a.dc)?;
                attention_backward_qkv(qkv, &a.dc, sh, &mut ba.attn, &mut a.d3c)?;
                blk.qkv.backward(ln1, &a.d3c, n, &mut a.dc)?;
            }
            blk.ln1
                .backward(&a.res[l], &a.dc, &ba.ln1_mean, &ba.ln1_rstd, n, &mut a.dc2)?;
            add_into_par(&mut a.dres, &a.dc2, self.loop_par); // dres = dres2 + LN1 backward
        }
        self.wte.backward(&a.tokens, &a.dres)?;
        self.wpe.backward(&a.pos, &a.dres)?;
        Ok(())
    }
}
