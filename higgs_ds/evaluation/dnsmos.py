"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808 MOS from speechmos's ONNX models (in its wheel), on onnxruntime's CPU
provider. Non-intrusive: it scores a clip on its own (no reference), on 9 s windows at 16 kHz."""
import os

import numpy as np

SAMPLE_RATE = 16000
KEYS = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")


class DnsmosScorer:
    name = "dnsmos"

    def __init__(self, threads=1):
        import onnxruntime as ort
        from speechmos import dnsmos

        models = os.path.join(os.path.dirname(dnsmos.__file__), "dnsmos_models")
        self.model = dnsmos.DNSMOS.__new__(dnsmos.DNSMOS)  # its __init__ takes no session options
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = threads
        cpu = ["CPUExecutionProvider"]
        self.model.primary_model_path = os.path.join(models, "sig_bak_ovr.onnx")
        self.model.onnx_sess = ort.InferenceSession(self.model.primary_model_path, opts, providers=cpu)
        self.model.p808_onnx_sess = ort.InferenceSession(os.path.join(models, "model_v8.onnx"), opts, providers=cpu)

    def score(self, wav):
        """{dnsmos_ovrl, dnsmos_sig, dnsmos_bak, dnsmos_p808} of a 16 kHz clip (clipped to [-1, 1])."""
        wav = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0)
        r = self.model(wav, SAMPLE_RATE, False)
        return {"dnsmos_ovrl": float(r["ovrl_mos"]), "dnsmos_sig": float(r["sig_mos"]),
                "dnsmos_bak": float(r["bak_mos"]), "dnsmos_p808": float(r["p808_mos"])}
