//! The GPU path: WGSL compute shaders run through wgpu.
//!
//! A GPU worker creates one [`GpuContext`] at start (device, queue, and the
//! compiled pipelines) and every GPU task reuses it. Without a physical GPU
//! the same shaders run on a software Vulkan driver (Mesa lavapipe). A
//! worker started with `--gpu` and no usable adapter fails at start; it
//! never falls back to the CPU silently.

use std::sync::{Arc, OnceLock};

use wgpu::util::DeviceExt;

use super::{Elementwise, Matrix, MatrixRef};
use crate::{Error, Result};

/// Side of the square tile each workgroup of the product computes, held
/// in workgroup memory.
const TILE: u32 = 16;
/// Threads per workgroup of the element-wise kernels.
const LINEAR: u32 = 256;
/// Largest workgroup count along one dispatch dimension.
const MAX_GROUPS: u32 = 65_535;

const MATMUL_WGSL: &str = r#"
struct Dims { m: u32, k: u32, n: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = gid.y;
    let col = gid.x;
    var acc = 0.0;
    let tiles = (dims.k + 15u) / 16u;
    for (var t = 0u; t < tiles; t = t + 1u) {
        let ac = t * 16u + lid.x;
        let br = t * 16u + lid.y;
        if (row < dims.m && ac < dims.k) {
            ta[lid.y][lid.x] = a[row * dims.k + ac];
        } else {
            ta[lid.y][lid.x] = 0.0;
        }
        if (br < dims.k && col < dims.n) {
            tb[lid.y][lid.x] = b[br * dims.n + col];
        } else {
            tb[lid.y][lid.x] = 0.0;
        }
        workgroupBarrier();
        for (var i = 0u; i < 16u; i = i + 1u) {
            acc = acc + ta[lid.y][i] * tb[i][lid.x];
        }
        workgroupBarrier();
    }
    if (row < dims.m && col < dims.n) {
        c[row * dims.n + col] = acc;
    }
}
"#;

const ELEMENTWISE_WGSL: &str = r#"
struct Params { len: u32, op: u32, factor: f32, pad: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.y * groups.x * 256u + gid.x;
    if (i >= p.len) {
        return;
    }
    switch p.op {
        case 0u: { c[i] = a[i] + b[i]; }
        case 1u: { c[i] = a[i] - b[i]; }
        case 2u: { c[i] = a[i] * b[i]; }
        default: { c[i] = a[i] * p.factor; }
    }
}
"#;

const TRANSPOSE_WGSL: &str = r#"
struct Dims { rows: u32, cols: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> unused: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

var<workgroup> tile: array<array<f32, 17>, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    // Keeps binding 1 in the layout, so every kernel binds alike.
    if (arrayLength(&unused) == 0u) {
        return;
    }
    let r = wid.y * 16u + lid.y;
    let col = wid.x * 16u + lid.x;
    if (r < dims.rows && col < dims.cols) {
        tile[lid.y][lid.x] = a[r * dims.cols + col];
    }
    workgroupBarrier();
    let out_r = wid.x * 16u + lid.y;
    let out_c = wid.y * 16u + lid.x;
    if (out_r < dims.cols && out_c < dims.rows) {
        c[out_r * dims.rows + out_c] = tile[lid.x][lid.y];
    }
}
"#;

/// A GPU device with the compiled matrix pipelines.
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: String,
    matmul: wgpu::ComputePipeline,
    elementwise: wgpu::ComputePipeline,
    transpose: wgpu::ComputePipeline,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuContext({})", self.adapter)
    }
}

static WORKER_GPU: OnceLock<Arc<GpuContext>> = OnceLock::new();

impl GpuContext {
    /// Opens the first usable GPU adapter (a high-performance one if there
    /// is a choice) and compiles the pipelines.
    ///
    /// ```no_run
    /// let gpu = dfut::matrix::gpu::GpuContext::new()?;
    /// println!("{}", gpu.adapter_name());
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn new() -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| {
            Error::Gpu(crate::Cause::context(
                "no usable GPU adapter (install a Vulkan driver; for a software one: \
                 apt-get install mesa-vulkan-drivers libvulkan1)",
                e,
            ))
        })?;
        let info = adapter.get_info();
        let adapter_name = format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("dfut"),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| {
            Error::Gpu(crate::Cause::context(
                format!("{adapter_name}: cannot open the device"),
                e,
            ))
        })?;
        // Errors are captured per operation (error scopes in `run`); one that
        // escapes is logged, never a panic.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            tracing::error!("uncaptured GPU error: {e}");
        }));
        let pipeline = |label: &str, source: &str| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        Ok(Self {
            matmul: pipeline("matmul", MATMUL_WGSL),
            elementwise: pipeline("elementwise", ELEMENTWISE_WGSL),
            transpose: pipeline("transpose", TRANSPOSE_WGSL),
            device,
            queue,
            adapter: adapter_name,
        })
    }

    /// The adapter's name, type and backend.
    pub fn adapter_name(&self) -> &str {
        &self.adapter
    }

    /// Makes `ctx` this process's worker GPU.
    pub(crate) fn install(ctx: Arc<GpuContext>) {
        let _ = WORKER_GPU.set(ctx);
    }

    /// This worker's GPU, if it has one.
    pub fn worker() -> Option<Arc<GpuContext>> {
        WORKER_GPU.get().cloned()
    }

    /// The GPU of the `#[remote(gpu)]` task running on this thread: the
    /// device, queue and compiled pipelines its worker opened at start. For
    /// shaders of your own; `Matrix` operations use it by themselves.
    ///
    /// ```
    /// // Outside a GPU task there is none.
    /// assert!(dfut::matrix::gpu::GpuContext::current().is_none());
    /// ```
    pub fn current() -> Option<Arc<GpuContext>> {
        crate::context::in_gpu_task().then(Self::worker).flatten()
    }

    /// The device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    fn storage(&self, data: &[f32]) -> wgpu::Buffer {
        // An empty binding is not allowed: keep at least one element.
        let data = if data.is_empty() { &[0.0][..] } else { data };
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE,
            })
    }

    fn uniform(&self, words: [u32; 4]) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// Runs `pipeline` over `a`, `b` into a new buffer of `len` floats and
    /// reads it back.
    fn run(
        &self,
        pipeline: &wgpu::ComputePipeline,
        a: &[f32],
        b: &[f32],
        len: usize,
        params: [u32; 4],
        groups: (u32, u32),
    ) -> Result<Vec<f32>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let bytes = (len * 4) as u64;
        let buf_a = self.storage(a);
        let buf_b = self.storage(b);
        let out = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let params = self.uniform(params);
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: buf_a.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: buf_b.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: out.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: params.as_entire_binding(),
                },
            ],
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, 1);
        }
        encoder.copy_buffer_to_buffer(&out, 0, &staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        for scope in [memory, validation] {
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(Error::Gpu(e.to_string().into()));
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(crate::Cause::context("waiting for the device", e)))?;
        rx.recv()
            .map_err(|_| Error::Gpu("the device dropped a read-back".into()))?
            .map_err(|e| Error::Gpu(crate::Cause::context("reading back", e)))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(crate::Cause::context("reading back", e)))?;
        let result = view
            .chunks_exact(4)
            .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        drop(view);
        staging.unmap();
        Ok(result)
    }

    /// `a * b` with the tiled shader.
    pub(crate) fn matmul(&self, a: &MatrixRef<'_>, b: &MatrixRef<'_>) -> Result<Matrix> {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let groups = (n.div_ceil(TILE), m.div_ceil(TILE));
        if groups.0 > MAX_GROUPS || groups.1 > MAX_GROUPS {
            return Err(Error::Gpu(
                format!("a {m}x{n} product is too large for one dispatch").into(),
            ));
        }
        let data = self.run(
            &self.matmul,
            a.data,
            b.data,
            (m * n) as usize,
            [m, k, n, 0],
            groups,
        )?;
        Matrix::new(m as usize, n as usize, data)
    }

    fn linear(&self, a: &MatrixRef<'_>, b: &MatrixRef<'_>, op: u32, factor: f32) -> Result<Matrix> {
        let len = a.data.len() as u32;
        let groups = len.div_ceil(LINEAR).max(1);
        let grid = (groups.min(MAX_GROUPS), groups.div_ceil(MAX_GROUPS));
        let data = self.run(
            &self.elementwise,
            a.data,
            b.data,
            a.data.len(),
            [len, op, factor.to_bits(), 0],
            grid,
        )?;
        Matrix::new(a.rows(), a.cols(), data)
    }

    /// `a (op) b` element-wise.
    pub(crate) fn elementwise(
        &self,
        a: &MatrixRef<'_>,
        b: &MatrixRef<'_>,
        kind: Elementwise,
    ) -> Result<Matrix> {
        let op = match kind {
            Elementwise::Add => 0,
            Elementwise::Sub => 1,
            Elementwise::Mul => 2,
        };
        self.linear(a, b, op, 0.0)
    }

    /// `factor * a`.
    pub(crate) fn scale(&self, a: &MatrixRef<'_>, factor: f32) -> Result<Matrix> {
        self.linear(a, a, 3, factor)
    }

    /// The transpose of `a`.
    pub(crate) fn transpose(&self, a: &MatrixRef<'_>) -> Result<Matrix> {
        let groups = (a.cols.div_ceil(TILE), a.rows.div_ceil(TILE));
        let data = self.run(
            &self.transpose,
            a.data,
            a.data,
            a.data.len(),
            [a.rows, a.cols, 0, 0],
            groups,
        )?;
        Matrix::new(a.cols(), a.rows(), data)
    }
}
