//! Process groups for data-parallel training over libtorch's own distributed engine, c10d
//! (the engine under PyTorch's DDP): a `TCPStore` rendezvous and a Gloo group for CPU ranks or an
//! NCCL group for GPU ranks, through the C++ shim `src/shim/dist.cpp` (NCCL's part,
//! `src/shim/nccl.cpp`, is a shared library the binary carries and loads only on GPU ranks). A process learns its place from the environment
//! torchrun sets (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`) or SLURM's
//! (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`). Every collective waits at most the group's
//! timeout, so a rank that died stops the others with an error instead of a hang.
use anyhow::{bail, Context, Result};
use std::ffi::{c_char, c_int, c_long, c_void, CStr, CString};
use std::time::Duration;
use tch::Tensor;

pub mod nccl;

extern "C" {
    fn svib_dist_new(
        host: *const c_char,
        port: c_int,
        serve: c_int,
        rank: c_int,
        size: c_int,
        timeout_ms: c_long,
        bind_host: *const c_char,
        nccl_new: *const c_void,
        device: c_int,
        out: *mut *mut c_void,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    fn svib_dist_free(g: *mut c_void);
    fn svib_dist_allreduce_sum(g: *mut c_void, ts: *const *const c_void, n: usize, err: *mut c_char, cap: usize) -> c_int;
    fn svib_dist_allreduce_sum_grad(g: *mut c_void, x: *const c_void, out: *mut *mut c_void, err: *mut c_char, cap: usize) -> c_int;
    fn svib_dist_broadcast(g: *mut c_void, ts: *const *const c_void, n: usize, root: c_int, err: *mut c_char, cap: usize) -> c_int;
    fn svib_dist_allgather(g: *mut c_void, input: *const c_void, outs: *const *const c_void, n: usize, err: *mut c_char, cap: usize) -> c_int;
    fn svib_dist_barrier(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
}

/// Where this process stands in a distributed run, from the launcher's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already serves the store at MASTER_ADDR:MASTER_PORT
    /// (TORCHELASTIC_USE_AGENT_STORE=True): rank 0 connects to it instead of serving its own.
    pub agent_store: bool,
}

impl DistEnv {
    /// torchrun's variables, else SLURM's; None without a launcher. A world of one is a group
    /// only when torchrun (`TORCHELASTIC_RUN_ID`) or `svib launch` (`SVIB_LAUNCH`) started the
    /// process, as DDP under `torchrun --nproc-per-node 1`; a stray `WORLD_SIZE=1` or a one-task
    /// SLURM step trains alone.
    pub fn from_env() -> Result<Option<DistEnv>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Self::from_env`] over any source of variables (for tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<DistEnv>> {
        let keys = if var("WORLD_SIZE").is_some() { ["RANK", "WORLD_SIZE", "LOCAL_RANK"] } else { ["SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"] };
        let num = |k: &str| -> Result<Option<usize>> {
            var(k).map(|v| v.trim().parse::<usize>().with_context(|| format!("environment variable {k}: expected a whole number, got `{v}`"))).transpose()
        };
        let Some(world_size) = num(keys[1])? else { return Ok(None) };
        if world_size == 0 {
            bail!("environment variable {}: expected 1 or more processes, got 0", keys[1]);
        }
        let rank = num(keys[0])?.with_context(|| format!("environment variable {}: not set, but {} = {world_size}", keys[0], keys[1]))?;
        if rank >= world_size {
            bail!("environment variable {}: expected a rank below {} = {world_size}, got {rank}", keys[0], keys[1]);
        }
        let local_rank = num(keys[2])?.unwrap_or(0);
        if world_size == 1 && (keys[1] == "SLURM_NTASKS" || (var("TORCHELASTIC_RUN_ID").is_none() && var("SVIB_LAUNCH").is_none())) {
            return Ok(None);
        }
        let master_addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let port = var("MASTER_PORT").unwrap_or_else(|| "29500".into());
        let master_port = port.trim().parse().with_context(|| format!("environment variable MASTER_PORT: expected a port number, got `{port}`"))?;
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        Ok(Some(DistEnv { rank, world_size, local_rank, master_addr, master_port, agent_store }))
    }
}

/// Which c10d backend a group runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// CPU tensors (ranks training on CPUs).
    Gloo,
    /// CUDA tensors on this CUDA device (ranks training on GPUs); tensors elsewhere are copied
    /// there and back.
    Nccl { device: usize },
}

/// A process group.
pub struct Group {
    ptr: *mut c_void,
    pub rank: usize,
    pub size: usize,
    /// The device NCCL's collectives run on; None for Gloo.
    device: Option<tch::Device>,
}

// SAFETY: the group is used from one thread at a time (&self methods are called by the training
// thread, or by autograd's through the shim); c10d's Gloo and NCCL backends are thread-safe.
unsafe impl Send for Group {}

/// Runs one shim call and turns its error text into an error.
fn call(what: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
    let mut buf = [0 as c_char; 1024];
    if f(buf.as_mut_ptr(), buf.len()) != 0 {
        // SAFETY: the shim NUL-terminates what it writes into buf.
        let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
        bail!("{what}: {}", msg.lines().next().unwrap_or(""));
    }
    Ok(())
}

fn ptrs(ts: &[&Tensor]) -> Vec<*const c_void> {
    ts.iter().map(|t| t.as_ptr() as *const c_void).collect()
}

impl Group {
    /// Joins the Gloo group `env` describes; waits at most `timeout` for the others, and each
    /// collective at most `timeout`.
    pub fn join(env: &DistEnv, timeout: Duration) -> Result<Group> {
        Self::join_with(env, timeout, Backend::Gloo)
    }

    /// [`Self::join`] over `backend`.
    pub fn join_with(env: &DistEnv, timeout: Duration, backend: Backend) -> Result<Group> {
        let (nccl, device) = match backend {
            Backend::Gloo => (std::ptr::null(), None),
            Backend::Nccl { device } => (nccl::constructor().with_context(|| format!("rank {} of {}: NCCL", env.rank, env.world_size))?, Some(device)),
        };
        let host = CString::new(env.master_addr.clone())?;
        let local = matches!(env.master_addr.as_str(), "127.0.0.1" | "localhost" | "::1");
        let bind = CString::new(if local { "127.0.0.1" } else { "" })?;
        let mut ptr = std::ptr::null_mut();
        let what = format!("rank {} of {}: joining the group at {}:{}", env.rank, env.world_size, env.master_addr, env.master_port);
        // SAFETY: the strings and `ptr` outlive the call; the shim allocates the group.
        call(&what, |e, n| unsafe {
            let dev = device.unwrap_or(0) as c_int;
            let serve = (env.rank == 0 && !env.agent_store) as c_int;
            svib_dist_new(
                host.as_ptr(),
                env.master_port as c_int,
                serve,
                env.rank as c_int,
                env.world_size as c_int,
                timeout.as_millis() as c_long,
                bind.as_ptr(),
                nccl,
                dev,
                &mut ptr,
                e,
                n,
            )
        })?;
        Ok(Group { ptr, rank: env.rank, size: env.world_size, device: device.map(tch::Device::Cuda) })
    }

    /// The tensors a collective runs on: `ts` themselves, or for NCCL copies on its device of
    /// those that live elsewhere (written back by [`Self::write_back`]).
    fn staged(&self, ts: &[&Tensor]) -> Vec<Tensor> {
        ts.iter().map(|t| self.device.map_or_else(|| t.shallow_clone(), |d| t.to_device(d))).collect()
    }

    /// Copies staged tensors back into the originals they were copied from.
    fn write_back(ts: &[&Tensor], staged: &[Tensor]) {
        tch::no_grad(|| {
            for (t, s) in ts.iter().zip(staged).filter(|(t, s)| t.device() != s.device()) {
                t.shallow_clone().copy_(s);
            }
        });
    }

    /// What a failed collective says: which rank saw it, and what it means.
    fn failed(&self, op: &str) -> String {
        format!(
            "rank {} of {}: {op} failed, so another rank stopped or cannot be reached (its last checkpoint stays good: run the same command again to resume)",
            self.rank, self.size
        )
    }

    /// Runs the shim's in-place collective `f` (on the tensors' pointers) over `ts`, staged onto
    /// the group's device where needed and written back.
    fn in_place(&self, ts: &[&Tensor], op: &str, f: impl FnOnce(&[*const c_void], *mut c_char, usize) -> c_int) -> Result<()> {
        let staged = self.staged(ts);
        let p = ptrs(&staged.iter().collect::<Vec<_>>());
        call(&self.failed(op), |e, n| f(&p, e, n))?;
        Self::write_back(ts, &staged);
        Ok(())
    }

    /// Sums each tensor over the ranks, in place.
    pub fn all_reduce_sum(&self, ts: &[&Tensor]) -> Result<()> {
        // SAFETY: live tensors borrowed for the call, changed in place.
        self.in_place(ts, "all-reduce", |p, e, n| unsafe { svib_dist_allreduce_sum(self.ptr, p.as_ptr(), p.len(), e, n) })
    }

    /// Averages each tensor over the ranks, in place.
    pub fn all_reduce_mean(&self, ts: &[&Tensor]) -> Result<()> {
        self.all_reduce_sum(ts)?;
        for t in ts {
            let _ = t.shallow_clone().g_div_(&Tensor::from(self.size as f64));
        }
        Ok(())
    }

    /// The sum of `t` over the ranks, differentiable: its backward sums the ranks' gradients
    /// (torch.distributed.nn.all_reduce), so that a loss on rank r reaches the inputs of every rank.
    pub fn all_reduce_sum_grad(&self, t: &Tensor) -> Result<Tensor> {
        let x = self.staged(&[t]).remove(0);
        let mut out = std::ptr::null_mut();
        // SAFETY: `x` is live for the call; the shim allocates the result, owned by the Tensor.
        call(&self.failed("all-reduce"), |e, n| unsafe { svib_dist_allreduce_sum_grad(self.ptr, x.as_ptr() as *const c_void, &mut out, e, n) })?;
        // SAFETY: a tensor the shim allocated for us.
        Ok(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) }.to_device(t.device()))
    }

    /// Every rank's `t` concatenated along the first dimension in rank order, differentiable
    /// (solo-learn's GatherLayer): the gradient of this rank's rows sums every rank's. All ranks'
    /// `t` must have the same shape.
    pub fn all_gather_grad(&self, t: &Tensor) -> Result<Tensor> {
        let pad = |parts: usize| {
            let mut shape = t.size();
            shape[0] *= parts as i64;
            Tensor::zeros(shape.as_slice(), (t.kind(), t.device()))
        };
        let placed = Tensor::cat(&[pad(self.rank), t.shallow_clone(), pad(self.size - self.rank - 1)], 0);
        self.all_reduce_sum_grad(&placed)
    }

    /// Copies each tensor of rank `root` into every other rank's, in place: one collective per
    /// dtype and device, over the tensors flattened into one bucket (as DDP's buffers), not one
    /// per tensor.
    pub fn broadcast(&self, ts: &[&Tensor], root: usize) -> Result<()> {
        let mut kinds: Vec<(tch::Kind, tch::Device)> = vec![];
        for k in ts.iter().map(|t| (t.kind(), t.device())) {
            if !kinds.contains(&k) {
                kinds.push(k); // in order of first appearance: the same on every rank
            }
        }
        for kind in kinds {
            let bucket: Vec<&Tensor> = ts.iter().copied().filter(|t| (t.kind(), t.device()) == kind).collect();
            let flat = flatten(&bucket);
            // SAFETY: live tensors borrowed for the call, changed in place.
            self.in_place(&[&flat], "broadcast", |p, e, n| unsafe { svib_dist_broadcast(self.ptr, p.as_ptr(), p.len(), root as c_int, e, n) })?;
            unflatten_into(&bucket, &flat);
        }
        Ok(())
    }

    /// Every rank's `t`, concatenated along the first dimension in rank order.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let x = self.staged(&[t]).remove(0).contiguous();
        let outs: Vec<Tensor> = (0..self.size).map(|_| x.empty_like()).collect();
        let p = ptrs(&outs.iter().collect::<Vec<_>>());
        // SAFETY: as above; `outs` are written.
        call(&self.failed("all-gather"), |e, n| unsafe { svib_dist_allgather(self.ptr, x.as_ptr() as *const c_void, p.as_ptr(), p.len(), e, n) })?;
        Ok(Tensor::cat(&outs, 0).to_device(t.device()))
    }

    /// Waits until every rank is here.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: the group is live.
        call(&self.failed("barrier"), |e, n| unsafe { svib_dist_barrier(self.ptr, e, n) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: created by svib_dist_new, freed once.
        unsafe { svib_dist_free(self.ptr) }
    }
}

/// The values of `ts` in one 1-D tensor, in order (a bucket for one collective; no gradient).
pub fn flatten(ts: &[&Tensor]) -> Tensor {
    Tensor::cat(&ts.iter().map(|t| t.detach().reshape([-1])).collect::<Vec<_>>(), 0)
}

/// Copies consecutive parts of the 1-D `flat` into `ts` (shaped as they are), without gradient:
/// the inverse of [`flatten`].
pub fn unflatten_into(ts: &[&Tensor], flat: &Tensor) {
    let mut at = 0;
    tch::no_grad(|| {
        for t in ts {
            let n = t.numel() as i64;
            t.shallow_clone().copy_(&flat.narrow(0, at, n).view_as(t));
            at += n;
        }
    });
}

/// `svib launch`: runs `args` (an svib command line) in `nproc` local processes with torchrun's
/// variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1, MASTER_PORT = `port` or a
/// free one), each with its share of the cores unless `args` set `--threads`; waits for all.
/// Returns the exit code: 0, or the first failing rank's (named on stderr).
pub fn launch(nproc: usize, port: Option<u16>, args: &[String]) -> Result<i32> {
    anyhow::ensure!(nproc >= 1, "--nproc: expected at least 1 process");
    anyhow::ensure!(port != Some(0), "--master-port: expected 1 to 65535 (leave it out for a free one)");
    anyhow::ensure!(!args.is_empty(), "expected the svib command to run after `--`, e.g. svib launch --nproc 2 -- train --config fmnist-cpu --out runs/a");
    let port = match port {
        Some(p) => p,
        None => std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
    };
    let exe = std::env::current_exe().context("the svib executable")?;
    let cores = crate::util::cores();
    let mut argv: Vec<String> = vec![];
    if !args.iter().any(|a| a == "--threads" || a.starts_with("--threads=")) {
        argv.extend(["--threads".to_string(), (cores / nproc).max(1).to_string()]);
    }
    argv.extend(args.iter().cloned());
    eprintln!("launching {nproc} processes of `svib {}` (MASTER_ADDR=127.0.0.1 MASTER_PORT={port})", argv.join(" "));
    let mut children = vec![];
    for r in 0..nproc {
        let vars = [
            ("RANK", r.to_string()),
            ("LOCAL_RANK", r.to_string()),
            ("WORLD_SIZE", nproc.to_string()),
            ("MASTER_ADDR", "127.0.0.1".into()),
            ("MASTER_PORT", port.to_string()),
            ("SVIB_LAUNCH", "1".into()),
        ];
        // a process group of their own: Ctrl-C reaches the launcher alone, which forwards it once;
        // a launcher that dies (SIGTERM, SIGKILL) takes its ranks along, as if Ctrl-C
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(&argv).envs(vars);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
        let cmd = cmd.spawn();
        children.push(cmd.with_context(|| format!("starting rank {r}"))?);
    }
    let _ = ctrlc::set_handler(|| {
        INTERRUPTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    wait_all(children)
}

/// Ctrl-C presses the launcher received (forwarded to the ranks by [`wait_all`]).
static INTERRUPTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Waits for every rank; the first to fail is named (the others then fail at their next
/// collective, and are named too); a rank still running 60 s after a failure is killed, as
/// torchrun stops the rest of a failed group. Returns 0 or the first failure's exit code
/// (128 + the signal for a rank killed by one).
fn wait_all(mut children: Vec<std::process::Child>) -> Result<i32> {
    use std::os::unix::process::ExitStatusExt;
    let n = children.len();
    let (mut running, mut code, mut failed_at, mut forwarded) = (vec![true; n], 0, None::<std::time::Instant>, 0);
    // rank 0 prints the run's `error:` line (the others print theirs as `rank N: …`); the
    // launcher adds one only where rank 0 did not (it ended another way, or not at all)
    let mut rank0_said = false;
    while running.iter().any(|&r| r) {
        // Ctrl-C: each rank checkpoints after the step all agree on and stops (twice: at once)
        while forwarded < INTERRUPTS.load(std::sync::atomic::Ordering::SeqCst) {
            forwarded += 1;
            for c in children.iter().zip(&running).filter(|(_, &r)| r).map(|(c, _)| c) {
                // SAFETY: signals a child process of ours that has not been reaped.
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGINT) };
            }
        }
        for (r, c) in children.iter_mut().enumerate() {
            if !running[r] {
                continue;
            }
            let Some(status) = c.try_wait()? else { continue };
            running[r] = false;
            if status.success() {
                continue;
            }
            // a rank that checkpointed and stopped on the Ctrl-C passed on to it said so
            if forwarded > 0 && status.code() == Some(130) {
                code = if code == 0 { 130 } else { code };
                rank0_said |= r == 0;
                continue;
            }
            let first = code == 0;
            if first {
                code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                failed_at = Some(std::time::Instant::now());
            }
            let then = if first { "; the other ranks stop at their next collective" } else { "" };
            eprintln!("launch: rank {r} of {n} ended ({status}){then}");
            // exit 2: svib's error line; 1: a collective's; 130: the user's second Ctrl-C
            rank0_said |= r == 0 && matches!(status.code(), Some(1 | 2 | 130));
        }
        if failed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
            for (r, c) in children.iter_mut().enumerate().filter(|(r, _)| running[*r]) {
                eprintln!("launch: rank {r} of {n} still running 60 s after the failure: killed");
                let _ = c.kill();
            }
            failed_at = None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if code != 0 && !rank0_said {
        eprintln!("error: the launched ranks failed (exit code {code}); their lines are above");
    }
    Ok(code)
}

/// The process group of this process's training run, set once (as torch.distributed's default
/// group): methods reduce their batch statistics through it.
static GLOBAL: std::sync::OnceLock<std::sync::Mutex<Group>> = std::sync::OnceLock::new();

/// Makes `g` the group of this process (once).
pub fn set_global(g: Group) -> Result<()> {
    GLOBAL.set(std::sync::Mutex::new(g)).map_err(|_| anyhow::anyhow!("the process group is already set"))
}

/// (rank, world size): (0, 1) without a group.
pub fn world() -> (usize, usize) {
    GLOBAL.get().map_or((0, 1), |g| {
        let g = g.lock().expect("group lock");
        (g.rank, g.size)
    })
}

/// Whether this process has joined a group.
pub fn joined() -> bool {
    GLOBAL.get().is_some()
}

/// Runs `f` on the global group; None without one.
pub fn with_global<T>(f: impl FnOnce(&Group) -> Result<T>) -> Option<Result<T>> {
    GLOBAL.get().map(|g| f(&g.lock().expect("group lock")))
}

/// The mean of `t` over the ranks (a copy; `t` itself without a group). A failed collective
/// ends the process with its error line (see [`collective`]).
pub fn mean_over_ranks(t: &Tensor) -> Tensor {
    collective(
        |g| {
            let c = t.detach().copy();
            g.all_reduce_mean(&[&c])?;
            Ok(c)
        },
        || t.shallow_clone(),
    )
}

static SYNC_BN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether BatchNorm layers in training mode normalise with the global batch's statistics
/// (`model.sync_bn`; set by the trainer when it joins a group).
pub fn set_sync_batch_norm(on: bool) {
    SYNC_BN.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// True when BatchNorm synchronises: switched on and this process is in a group.
pub fn sync_batch_norm() -> bool {
    SYNC_BN.load(std::sync::atomic::Ordering::Relaxed) && joined()
}

/// Runs a collective of the global group inside a method's loss: `f(group)`, or `alone()`
/// without a group. A failed collective there cannot be recovered: it is named on stderr and
/// the process ends (the trainer's other ranks then stop at their next collective).
fn collective(f: impl FnOnce(&Group) -> Result<Tensor>, alone: impl FnOnce() -> Tensor) -> Tensor {
    match with_global(f) {
        None => alone(),
        Some(r) => r.unwrap_or_else(|e| {
            eprintln!("{}{e:#}", crate::util::error_prefix());
            std::process::exit(1)
        }),
    }
}

/// The mean over the first dimension of the global batch: each rank's batch mean, averaged over
/// the ranks (their batches are equal); the batch mean itself without a group.
pub fn batch_mean(t: &Tensor, keepdim: bool) -> Tensor {
    mean_over_ranks(&t.mean_dim([0i64].as_slice(), keepdim, tch::Kind::Float))
}

/// Every rank's `t` concatenated in rank order, without gradient (`t` itself without a group).
pub fn gather_over_ranks(t: &Tensor) -> Tensor {
    collective(|g| g.all_gather(&t.detach()), || t.shallow_clone())
}

/// Every rank's `t` concatenated in rank order, with gradient (`t` itself without a group).
pub fn gather_over_ranks_grad(t: &Tensor) -> Tensor {
    collective(|g| g.all_gather_grad(t), || t.shallow_clone())
}

/// A batch of `n_views` views stacked as `[view 0 rows; view 1 rows; …]`, gathered over the
/// ranks and laid out as one process holding the global batch would hold it: view 0 of every
/// rank in rank order, then view 1, … (no gradient; `t` itself without a group).
pub fn gather_views(t: &Tensor, n_views: i64) -> Tensor {
    if !joined() {
        return t.shallow_clone();
    }
    Tensor::cat(&t.chunk(n_views, 0).iter().map(gather_over_ranks).collect::<Vec<_>>(), 0)
}

/// This rank's rows of a global-batch tensor laid out by [`gather_views`].
pub fn own_rows(t: &Tensor, n_views: i64) -> Tensor {
    let (rank, size) = world();
    if size == 1 {
        return t.shallow_clone();
    }
    let per = t.size()[0] / n_views / size as i64;
    Tensor::cat(&t.chunk(n_views, 0).iter().map(|v| v.narrow(0, rank as i64 * per, per)).collect::<Vec<_>>(), 0)
}

/// The sum of `t` over the ranks, with gradient (`t` itself without a group).
pub fn sum_over_ranks_grad(t: &Tensor) -> Tensor {
    collective(|g| g.all_reduce_sum_grad(t), || t.shallow_clone())
}

#[cfg(test)]
pub(crate) mod tests;
