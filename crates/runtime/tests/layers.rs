//! Layer-by-layer execution with one layer's weights in memory reproduces the engine, and the
//! activation hook sees every linear layer's input.

use phiquant_runtime::{
    ActivationHook, Checkpoint, Engine, LayerRunner, LayerWeights, Linear, LinearInput, Logits,
    WeightSource, rms_norm,
};

use crate::util::root;

#[derive(Default)]
struct Record(Vec<(usize, Vec<Linear>, usize, usize, f32)>);

impl ActivationHook for Record {
    fn linear_input(&mut self, i: &LinearInput<'_>) {
        let sum_abs: f32 = i.x.iter().map(|v| v.abs()).sum();
        self.0.push((i.layer, i.projections.to_vec(), i.rows, i.cols, sum_abs));
    }
}

#[test]
fn layer_by_layer_equals_the_session() {
    for name in ["phi4-mini", "qwen2", "mistral"] {
        let ckpt = Checkpoint::open(&root().join("fixtures/models").join(name)).unwrap();
        let spec = ckpt.spec().clone();
        let engine = Engine::load(&ckpt).unwrap();
        let ids: Vec<u32> = (0..40).map(|i| (i * 37 % 300) as u32 + 3).collect();

        let mut whole = Record::default();
        let mut session = engine.session(ids.len());
        let want = session.forward_hooked(&ids, Logits::All, Some(&mut whole)).unwrap().to_vec();

        let embed = ckpt.tensor("model.embed_tokens.weight").unwrap().to_f32().unwrap();
        let mut hidden = LayerRunner::embed(&embed, spec.hidden_size, &ids);
        let mut runner = LayerRunner::new(&spec, ids.len()).unwrap();
        let mut layered = Record::default();
        for l in 0..spec.num_layers {
            let w = LayerWeights::load(&ckpt, l).unwrap();
            runner.run(l, &w, &mut hidden, ids.len(), Some(&mut layered)).unwrap();
        }
        let got = runner.logits(
            &engine.weights().final_norm,
            engine.weights().head(),
            &hidden,
            ids.len(),
        );
        assert_eq!(got, want, "{name}");

        // Four groups a layer: (q, k, v), o, (gate, up), down, with the right widths.
        assert_eq!(layered.0.len(), 4 * spec.num_layers);
        assert_eq!(layered.0, whole.0);
        let (_, parts, rows, cols, _) = &layered.0[3];
        assert_eq!(
            (parts.as_slice(), *rows, *cols),
            (&[Linear::Down][..], ids.len(), spec.intermediate_size)
        );
    }
}

#[test]
fn attention_and_mlp_blocks_compose_to_the_layer() {
    for name in ["phi4-mini", "qwen2", "mistral"] {
        let ckpt = Checkpoint::open(&root().join("fixtures/models").join(name)).unwrap();
        let spec = ckpt.spec().clone();
        let ids: Vec<u32> = (0..40).map(|i| (i * 37 % 300) as u32 + 3).collect();
        let (rows, h) = (ids.len(), spec.hidden_size);
        let eps = spec.rms_norm_eps as f32;
        let embed = ckpt.tensor("model.embed_tokens.weight").unwrap().to_f32().unwrap();
        let mut whole = LayerRunner::embed(&embed, h, &ids);
        let mut parts = whole.clone();
        let mut runner = LayerRunner::new(&spec, rows).unwrap();
        let mut seen = Record::default();
        for l in 0..spec.num_layers {
            let w = LayerWeights::load(&ckpt, l).unwrap();
            runner.run(l, &w, &mut whole, rows, None).unwrap();
            let (mut xn, mut out) = (vec![0f32; rows * h], vec![0f32; rows * h]);
            rms_norm(&parts, &w.attn_norm, eps, &mut xn);
            runner.attention(l, &w, &xn, rows, &mut out, Some(&mut seen)).unwrap();
            parts.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
            rms_norm(&parts, &w.ffn_norm, eps, &mut xn);
            // The MLP treats tokens one by one: two halves give the same rows.
            let half = rows / 2 * h;
            runner.mlp(l, &w, &xn[..half], rows / 2, &mut out[..half], Some(&mut seen)).unwrap();
            let rest = rows - rows / 2;
            runner.mlp(l, &w, &xn[half..], rest, &mut out[half..], None).unwrap();
            parts.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
            assert_eq!(parts, whole, "{name} layer {l}");
        }
        assert_eq!(seen.0.len(), 4 * spec.num_layers, "{name}");
        let mut out = vec![0f32; (rows + 1) * h];
        let too_long = vec![0f32; (rows + 1) * h];
        let w = LayerWeights::load(&ckpt, 0).unwrap();
        assert!(runner.attention(0, &w, &too_long, rows + 1, &mut out, None).is_err());
    }
}
