"""Parts of the hybridgrid benchmark (bench/run_all.py): each returns rows for one table."""
