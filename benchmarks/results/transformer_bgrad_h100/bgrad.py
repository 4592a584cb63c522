"""Scratch experiment, kept verbatim (BENCHMARKS.md, thirteenth session; record bgrad.json): the Transformer's weight-gradient GEMM with cuBLASLt's BGRADB epilogue,
which sums the bias gradient inside the GEMM, against dW = dY^T X plus a separate column sum of dY (what the
compiled step runs: 60 sums of [64256, 768] a step, 2.2 ms in trace_a). Base backward shapes, bf16.

    OUT=some/dir PYTHONPATH=src python benchmarks/results/transformer_bgrad_h100/bgrad.py

Column-major view: dW [O, I] row-major is D = X^T dY as an [I, O] column-major matrix; X [R, I] row-major
is A = [I, R] (op N); dY [R, O] row-major is stored [O, R], used transposed (op T). BGRADB's bias has n = O
entries, summed over k = R: exactly db = dY.sum(0).
"""
import ctypes, json, os, sys
import torch

ROWS = 64256
CUDA_R_32F, CUDA_R_16BF, COMPUTE_32F = 0, 14, 68
TRANSA, TRANSB, EPILOGUE, BIAS_POINTER, BIAS_DATA_TYPE = 3, 4, 7, 8, 26
EPI_DEFAULT, EPI_BGRADB = 1, 512
PREF_MAX_WORKSPACE = 1
WORKSPACE = 32 << 20


class Heuristic(ctypes.Structure):
    _fields_ = [("algo", ctypes.c_uint64 * 8), ("workspace", ctypes.c_size_t), ("state", ctypes.c_int),
                ("waves", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


def load_cublaslt():
    torch.ones(8, 8, device="cuda") @ torch.ones(8, 8, device="cuda")  # torch loads cuBLAS(Lt) now
    torch.cuda.synchronize()
    for line in open("/proc/self/maps"):
        if "libcublasLt" in line:
            return ctypes.CDLL(line.split()[-1])
    raise RuntimeError("libcublasLt not loaded by torch")


LT = None


def check(status, what):
    if status != 0:
        raise RuntimeError(f"{what}: cublasStatus {status}")


def set_attr(setter, obj, attr, value):
    check(setter(obj, ctypes.c_int(attr), ctypes.byref(value), ctypes.c_size_t(ctypes.sizeof(value))),
          f"set attribute {attr}")


def layout(dtype, rows, cols, ld):
    h = ctypes.c_void_p()
    check(LT.cublasLtMatrixLayoutCreate(ctypes.byref(h), ctypes.c_int(dtype), ctypes.c_uint64(rows),
                                        ctypes.c_uint64(cols), ctypes.c_int64(ld)), "layout")
    return h


class WgradGemm:
    """dW (and db with BGRADB) for X [R, I], dY [R, O], bf16; dW in out_dtype, db in bias_dtype."""

    def __init__(self, handle, I, O, R, epilogue, db=None, out_dtype=CUDA_R_16BF, bias_dtype=CUDA_R_32F):
        self.handle, self.epilogue = handle, epilogue
        self.desc = ctypes.c_void_p()
        check(LT.cublasLtMatmulDescCreate(ctypes.byref(self.desc), ctypes.c_int(COMPUTE_32F), ctypes.c_int(CUDA_R_32F)),
              "desc")
        set_attr(LT.cublasLtMatmulDescSetAttribute, self.desc, TRANSA, ctypes.c_int32(0))
        set_attr(LT.cublasLtMatmulDescSetAttribute, self.desc, TRANSB, ctypes.c_int32(1))
        set_attr(LT.cublasLtMatmulDescSetAttribute, self.desc, EPILOGUE, ctypes.c_uint32(epilogue))
        if epilogue == EPI_BGRADB:
            set_attr(LT.cublasLtMatmulDescSetAttribute, self.desc, BIAS_DATA_TYPE, ctypes.c_int32(bias_dtype))
            set_attr(LT.cublasLtMatmulDescSetAttribute, self.desc, BIAS_POINTER, ctypes.c_void_p(db.data_ptr()))
        self.a, self.b = layout(CUDA_R_16BF, I, R, I), layout(CUDA_R_16BF, O, R, O)
        self.d = layout(out_dtype, I, O, I)
        pref = ctypes.c_void_p()
        check(LT.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "pref")
        set_attr(LT.cublasLtMatmulPreferenceSetAttribute, pref, PREF_MAX_WORKSPACE, ctypes.c_size_t(WORKSPACE))
        results, count = (Heuristic * 8)(), ctypes.c_int(0)
        check(LT.cublasLtMatmulAlgoGetHeuristic(handle, self.desc, self.a, self.b, self.d, self.d, pref,
                                                ctypes.c_int(8), results, ctypes.byref(count)), "heuristic")
        if count.value == 0:
            raise RuntimeError(f"no cuBLASLt algorithm for epilogue {epilogue}")
        self.heuristic = results[0]
        self.n_algos = count.value
        self.alpha, self.beta = ctypes.c_float(1.0), ctypes.c_float(0.0)
        self.workspace = torch.empty(WORKSPACE, dtype=torch.uint8, device="cuda")

    def __call__(self, x, dy, dw):  # db: the tensor given at construction
        check(LT.cublasLtMatmul(
            self.handle, self.desc, ctypes.byref(self.alpha), ctypes.c_void_p(x.data_ptr()), self.a,
            ctypes.c_void_p(dy.data_ptr()), self.b, ctypes.byref(self.beta), ctypes.c_void_p(dw.data_ptr()), self.d,
            ctypes.c_void_p(dw.data_ptr()), self.d, ctypes.byref(self.heuristic.algo),
            ctypes.c_void_p(self.workspace.data_ptr()), ctypes.c_size_t(WORKSPACE),
            ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)), "matmul")


def time_ms(fn, repeats=50):
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(); start.record()
    for _ in range(repeats):
        fn()
    end.record(); torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def main():
    global LT
    LT = load_cublaslt()
    handle = ctypes.c_void_p()
    check(LT.cublasLtCreate(ctypes.byref(handle)), "create")
    rec = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": ROWS, "shapes": []}
    torch.manual_seed(0)
    compiled = torch.compile(lambda x, dy: (dy.t() @ x, dy.float().sum(0)))
    for I, O, per_step in ((768, 768, 48), (3072, 768, 12)):
        x = torch.randn(ROWS, I, device="cuda", dtype=torch.bfloat16)
        dy = torch.randn(ROWS, O, device="cuda", dtype=torch.bfloat16)
        ref_dw, ref_db = dy.float().t() @ x.float(), dy.float().sum(0)
        row = {"in": I, "out": O, "per_step": per_step}
        dw = torch.empty(O, I, device="cuda", dtype=torch.bfloat16)
        db = torch.empty(O, device="cuda", dtype=torch.float32)
        row["torch_eager_ms"] = time_ms(lambda: (torch.mm(dy.t(), x, out=dw), dy.sum(0, dtype=torch.float32)))
        row["torch_gemm_only_ms"] = time_ms(lambda: torch.mm(dy.t(), x, out=dw))
        row["torch_colsum_only_ms"] = time_ms(lambda: dy.sum(0, dtype=torch.float32))
        row["compiled_ms"] = time_ms(lambda: compiled(x, dy))
        db16 = torch.empty(O, device="cuda", dtype=torch.bfloat16)
        for name, epi, bias, bias_type in (("lt_plain", EPI_DEFAULT, db, CUDA_R_32F),
                                           ("lt_bgradb", EPI_BGRADB, db, CUDA_R_32F),
                                           ("lt_bgradb_bf16bias", EPI_BGRADB, db16, CUDA_R_16BF)):
            try:
                g = WgradGemm(handle, I, O, ROWS, epi, bias, bias_dtype=bias_type)
                dw.zero_(); bias.zero_()
                g(x, dy, dw); torch.cuda.synchronize()
                row[name + "_dw_err"] = rel(dw, ref_dw)
                if epi == EPI_BGRADB:
                    row[name + "_db_err"] = rel(bias, ref_db)
                row[name + "_ms"] = time_ms(lambda g=g: g(x, dy, dw))
                row[name + "_algos"] = g.n_algos
            except Exception as e:  # noqa: BLE001 - a failure is the experiment's result
                row[name + "_error"] = repr(e)
        print(json.dumps(row), flush=True)
        rec["shapes"].append(row)
    save = {k: sum(r[k] * r["per_step"] for r in rec["shapes"] if k in r) for k in
            ("torch_eager_ms", "compiled_ms", "lt_plain_ms", "lt_bgradb_ms", "lt_bgradb_bf16bias_ms",
             "torch_gemm_only_ms")}
    rec["per_step_ms"] = save
    print("per step:", json.dumps(save))
    json.dump(rec, open(os.path.join(os.environ.get("OUT", "."), "bgrad.json"), "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
