"""hybridgrid.tasks"""
