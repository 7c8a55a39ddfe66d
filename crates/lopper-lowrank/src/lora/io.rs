//! LoRA adapters on their own as safetensors, in PEFT's naming.
use super::LoraAdapter;
use crate::{Error, Result};
use lopper_tensor::Tensor;
use lopper_tensor::io::safetensors::{self as st, SafetensorsFile};
use std::path::Path;

/// Writes adapters to a safetensors file (atomically) in PEFT's naming.
pub fn save_adapters(path: &Path, adapters: &[(&str, &LoraAdapter)]) -> Result<()> {
    let mut f = SafetensorsFile::default();
    for (prefix, a) in adapters {
        f.push(
            format!("{prefix}.lora_A.weight"),
            Tensor::from_f32(&[a.rank, a.cols], a.a.clone())?,
        );
        f.push(
            format!("{prefix}.lora_B.weight"),
            Tensor::from_f32(&[a.rows, a.rank], a.b.clone())?,
        );
        f.metadata
            .insert(format!("{prefix}.lora_alpha"), a.alpha.to_string());
    }
    f.metadata.insert("format".into(), "pt".into());
    st::write(path, &f)?;
    Ok(())
}

/// Reads adapters saved by [`save_adapters`] or PEFT (`adapter_model.safetensors`), in file order of
/// their A tensors. alpha comes from the metadata, else from `default_alpha` (PEFT keeps it in
/// adapter_config.json); a missing B, a shape mismatch or no alpha at all is an error.
pub fn load_adapters(
    path: &Path,
    default_alpha: Option<f32>,
) -> Result<Vec<(String, LoraAdapter)>> {
    let f = st::read(path)?;
    let fmt = |detail: String| Error::Format {
        path: path.display().to_string(),
        detail,
    };
    let mut out = Vec::new();
    for (name, a) in f.tensors() {
        let Some(prefix) = name.strip_suffix(".lora_A.weight") else {
            continue;
        };
        let bname = format!("{prefix}.lora_B.weight");
        let b = f
            .tensor(&bname)
            .ok_or_else(|| fmt(format!("{name} has no matching {bname}")))?;
        let alpha = match f.metadata.get(&format!("{prefix}.lora_alpha")) {
            Some(s) => s
                .parse::<f32>()
                .map_err(|e| fmt(format!("{prefix}.lora_alpha = {s:?}: {e}")))?,
            None => default_alpha.ok_or_else(|| {
                fmt(format!(
                    "no {prefix}.lora_alpha in the metadata and no default alpha given"
                ))
            })?,
        };
        let ad = LoraAdapter::from_parts(a, b, alpha).map_err(|e| fmt(format!("{prefix}: {e}")))?;
        out.push((prefix.to_string(), ad));
    }
    if out.is_empty() {
        return Err(fmt("no `<prefix>.lora_A.weight` tensors".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::tests::layer;

    #[test]
    fn save_load_peft_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("adapter_model.safetensors");
        let l1 = layer(6, 4, 2, 1);
        let l2 = layer(3, 5, 3, 2);
        save_adapters(
            &p,
            &[
                ("model.q_proj", l1.adapter()),
                ("model.v_proj", l2.adapter()),
            ],
        )
        .unwrap();
        let f = st::read(&p).unwrap();
        let names: Vec<&str> = f.entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.q_proj.lora_A.weight",
                "model.q_proj.lora_B.weight",
                "model.v_proj.lora_A.weight",
                "model.v_proj.lora_B.weight"
            ]
        );
        assert_eq!(
            f.tensor("model.q_proj.lora_A.weight").unwrap().shape(),
            &[2, 4]
        );
        assert_eq!(
            f.tensor("model.q_proj.lora_B.weight").unwrap().shape(),
            &[6, 2]
        );
        let back = load_adapters(&p, None).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(&back[0].1, l1.adapter());
        assert_eq!(&back[1].1, l2.adapter());
        assert_eq!(back[1].0, "model.v_proj");

        // a PEFT-style file: no alpha in the metadata, and one B missing
        let mut g = SafetensorsFile::default();
        g.push(
            "x.lora_A.weight",
            Tensor::zeros(&[2, 4], lopper_tensor::DType::F32),
        );
        st::write(&p, &g).unwrap();
        let e = load_adapters(&p, Some(16.0)).unwrap_err();
        assert!(e.to_string().contains("x.lora_B.weight"), "{e}");
        g.push(
            "x.lora_B.weight",
            Tensor::zeros(&[3, 2], lopper_tensor::DType::BF16),
        );
        st::write(&p, &g).unwrap();
        assert!(load_adapters(&p, None).is_err());
        let ok = load_adapters(&p, Some(16.0)).unwrap();
        assert_eq!(
            (ok[0].1.rank, ok[0].1.alpha, ok[0].1.scale()),
            (2, 16.0, 8.0)
        );
        g.push(
            "y.lora_A.weight",
            Tensor::zeros(&[2, 4], lopper_tensor::DType::F32),
        );
        g.push(
            "y.lora_B.weight",
            Tensor::zeros(&[3, 5], lopper_tensor::DType::F32),
        );
        st::write(&p, &g).unwrap();
        assert!(load_adapters(&p, Some(1.0)).is_err());
    }
}
