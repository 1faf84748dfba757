"""keadm"""
