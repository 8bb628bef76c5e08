#!/bin/bash
# Distillation settings beyond the default (alpha 1, T 2), on each seed's finished kg_distill
# run: the run folder is copied without its checkpoints and distill records, and resumed, so
# only the distill stage trains again (the same teacher export, the same seed).
while pgrep -f "runs/transfer/queue3.sh" > /dev/null; do sleep 15; done
cd /work/snap-kd
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 ACCELERATE_USE_CPU=1
for variant in "t1:stages.distill.temperature=1.0" "a3:stages.distill.alpha=3.0"; do
  name=${variant%%:*}; override=${variant#*:}
  for seed in 0 1 2; do
    src=/work/main/runs/transfer/kg_distill/seed-$seed
    dst=/work/main/runs/transfer/kd_$name/seed-$seed
    [ -f $dst/metrics.json ] && continue
    rm -rf $dst; mkdir -p $dst
    cp -r $src/export $src/adapters $src/config.yaml $src/ranks $dst/
    rm -rf $dst/export/ml-100k-distill $dst/export/ml-100k-distill_alone
    .venv/bin/python -c "import json,sys; p=sys.argv[1]; s=json.load(open(p)); [s.pop(k, None) for k in ('distill','distill_alone')]; json.dump(s, open(sys.argv[2],'w'), indent=2)" $src/stages.json $dst/stages.json
    .venv/bin/python -m accelerate.commands.launch --config_file launch/cpu_multiprocess.yaml --num_processes 2 -m distrec.train --config $dst/config.yaml --resume auto output.dir=$dst $override stages.distill.control=false > $dst.log 2>&1
  done
done
